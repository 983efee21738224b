"""The fault suite: the real server under load while a service it needs is killed, paused or cut
off, and the server itself killed mid-write (marker ``faults``)."""
