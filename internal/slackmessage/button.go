package slackmessage

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Button action IDs. They are a contract with the action handler, which dispatches on them, and
// with Slack, which echoes them back in block_actions payloads.
const (
	ActionRemediate   = "remediate"
	ActionAcknowledge = "acknowledge"
	ActionIntentional = "intentional"
)

// ActionsBlockID is the block_id of the one actions block, so the handler can tell our buttons
// from anything else in a payload.
const ActionsBlockID = "incident_actions"

// ErrButtonValue is returned for a button value keywarden did not write.
var ErrButtonValue = errors.New("malformed button value")

// ButtonValue is what every button carries: the incident's ID and the Version the message was
// rendered from. The action handler updates the incident on condition of that version, so a
// click on an outdated message, a second click or a replayed request cannot act twice.
func ButtonValue(id string, version int64) string {
	return id + ":" + strconv.FormatInt(version, 10)
}

// ParseButtonValue reverses ButtonValue. The value comes back from Slack inside a request
// body, so it is outside input: anything but exactly what ButtonValue writes — an ID free of
// colons and white space, a colon, a non-negative version in canonical decimal — is rejected.
func ParseButtonValue(v string) (id string, version int64, err error) {
	id, ver, ok := strings.Cut(v, ":")
	if !ok || id == "" || ver == "" || strings.ContainsAny(id, ": \t\r\n") {
		return "", 0, fmt.Errorf("parse button value %q: %w", truncate(v, 80), ErrButtonValue)
	}
	version, err = strconv.ParseInt(ver, 10, 64)
	if err != nil || version < 0 || strconv.FormatInt(version, 10) != ver {
		return "", 0, fmt.Errorf("parse button value %q: %w", truncate(v, 80), ErrButtonValue)
	}
	return id, version, nil
}
