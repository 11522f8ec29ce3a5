"""What runs on the workers beyond the turn itself: compliance replay."""
