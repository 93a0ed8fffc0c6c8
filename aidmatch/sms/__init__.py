"""SMS in: the Twilio webhooks (inbound messages and delivery callbacks) and what a message does."""
