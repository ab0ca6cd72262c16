"""The published description of a `voicemail` (the batch's field and a call's)."""

from batchcalls.domain.scripts import MAX_TEXT_CHARS

VOICEMAIL_DOC = (
    'What a call does when a machine answers: `{"action": "hangup"}` (the default: it hangs up at once)'
    ' or `{"action": "leave_message", "text": "..."}`: it waits for the machine\'s beep and speaks `text`'
    f" (like a script's text, the call's `variables` filled in: not empty, at most {MAX_TEXT_CHARS} characters;"
    " 422 `invalid_script` otherwise). Either way the call's outcome is `machine` (retried only if `retry_on` names it); the"
    " attempt's `voicemail_left` tells whether the message was left. A call's own replaces its batch's."
)
VOICEMAIL_EXAMPLE = {"action": "leave_message", "text": "Hello, this is Acme. Please call us back."}
