"""What tests read back from a guest."""


def output(m) -> str:
    """What a machine's BufferConsole received from the guest."""
    return bytes(m.frontend.output).decode()
