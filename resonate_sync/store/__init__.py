"""Stores for the durable state: today the JetStream store (``store.jetstream``); the file journal
still lives in ``resonate_sync.journal``."""
