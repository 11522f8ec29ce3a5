"""What every test shares: the services' helpers, stand-ins for peers, stream readers, recorded histories."""
