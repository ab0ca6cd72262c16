-- Voicemail: what a batch's calls (or one call) do when a machine answers,
-- `{"action": "hangup" | "leave_message", "text"}` (NULL: hang up, as before), and whether an
-- attempt left the message. A call's own replaces its batch's. Depends on 0001 only.
ALTER TABLE batches ADD COLUMN voicemail jsonb;
ALTER TABLE calls ADD COLUMN voicemail jsonb;
ALTER TABLE attempts ADD COLUMN voicemail_left boolean NOT NULL DEFAULT false;
