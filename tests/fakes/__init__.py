"""Local stand-ins for services outside the machine, speaking their real wire formats."""
