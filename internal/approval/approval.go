// Package approval decides what a Slack button click comes to. It checks Slack's request
// signature (Verify), decodes the click (ParseClick), authorises the clicking user against the
// configured approvers (Approvers, re-read from Slack for remediate and reboot clicks), and
// decides the click with one pure function, Decide: bound to the installed workspace and app,
// to Slack's response_url and to the incident's own message, then acknowledge, intentional,
// remediate (the two-person rule is incident.Incident.Approve's, read from typed approvals,
// never from timeline text) or reboot_instance. The SlackActionFunction handler writes, hands off
// and answers.
//
// Boundaries: it owns deciding what a click may do; it knows nothing of AWS or Lambda and must not
// import the AWS SDK, aws-lambda-go or the incident store; it imports slackmessage only for the
// buttons' contract (action IDs and values, which the message renders).
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
