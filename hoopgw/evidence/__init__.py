"""Evidence packs for auditors: the pack (pack)."""
