"""Dataset adapters: each turns a raw dataset layout into records for `pg2kit prepare`."""
