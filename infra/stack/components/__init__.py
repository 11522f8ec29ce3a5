"""How to run, and recognise as ready, each embedded component of the stack."""
