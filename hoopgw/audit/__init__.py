"""The audit trail: the hash chain and its writer (writer, process, journal), checkpoints, search
and export, replay and asciicast."""
