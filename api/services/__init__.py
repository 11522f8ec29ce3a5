"""What the routes do that spans several stores: starting a turn, following its stream, taking a document
in."""
