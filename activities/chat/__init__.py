"""The activities the chat worker registers: the steps of a chat turn, moderation, webhooks, the stack
probe."""
