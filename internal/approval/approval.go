// Package approval decides whether a Slack button click is genuine and allowed: it checks Slack's
// request signature, decodes the click, authorises the clicking user against the configured
// approvers, and applies an approver's click to the incident (Apply) with the model's rules —
// the two-person rule is incident.Incident.Approve's, read from typed approvals, never from
// timeline text. It knows nothing of AWS or Lambda; the SlackActionFunction handler maps its
// errors to HTTP statuses, refusals and Slack replies.
package approval

import "errors"

var (
	// ErrBadSignature means the request did not prove it came from Slack: a missing header, a
	// timestamp more than five minutes from local time, or a signature that does not match. The
	// handler answers 401 and changes nothing; the wrapped cause is for the log.
	ErrBadSignature = errors.New("bad slack signature")
	// ErrMalformed means the body is not a Slack interaction payload this package can read.
	ErrMalformed = errors.New("malformed slack interaction")
	// ErrUnsupported means a well-formed interaction of a kind keywarden does not handle (anything
	// but block_actions, e.g. view_submission or a shortcut).
	ErrUnsupported = errors.New("unsupported slack interaction")
)
