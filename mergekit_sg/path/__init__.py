"""Alpha scans and LMC barriers along the linear path between checkpoints, in memory."""
