package incident

import (
	"errors"
	"fmt"
)

// Errors of the incident record. Stores return them wrapped: test with errors.Is.
var (
	// ErrNotFound: no such incident, or no open incident for the key.
	ErrNotFound = errors.New("not found")
	// ErrStale: the incident moved on since the version the caller acted on.
	ErrStale = errors.New("incident changed since that version")
	// ErrConflict: too many concurrent writers for the bounded retries, or an incident cannot
	// reopen because another one is open for its key. Retrying the whole event later may help.
	ErrConflict = errors.New("conflicting concurrent change")
	// ErrIllegalTransition: the state machine does not allow the change (see the package doc).
	ErrIllegalTransition = errors.New("illegal state transition")
	// ErrAlreadyApproved: the user's approval already counts in this round.
	ErrAlreadyApproved = errors.New("already approved by this user")
)

// TransitionError is a refused state change: the incident is in From, and To cannot follow.
type TransitionError struct {
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot go from %s to %s", e.From, e.To)
}

// Unwrap makes errors.Is(err, ErrIllegalTransition) hold.
func (e *TransitionError) Unwrap() error { return ErrIllegalTransition }
