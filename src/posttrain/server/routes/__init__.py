"""One router per stage; each route parses, calls one library function, renders."""
