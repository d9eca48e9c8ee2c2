package approval

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/slack-go/slack"
)

// Click is one button press from a block_actions payload: who pressed what, on which message, and
// where to answer. Value carries whatever the message builder put on the button (for keywarden,
// the incident ID and version); this package does not interpret it.
type Click struct {
	UserID   string
	UserName string
	TeamID   string
	// EnterpriseID is the Enterprise Grid organisation, for an org-wide install.
	EnterpriseID string
	// AppID is the payload's api_app_id: the app the button belongs to.
	AppID       string
	ChannelID   string
	MessageTS   string
	ResponseURL string
	ActionID    string
	Value       string
	TriggerID   string
	ActionTS    string
}

// ParseClick decodes a Slack interaction request body: application/x-www-form-urlencoded with the
// JSON in the "payload" field. It returns the first block action, because a button press carries
// exactly one. A body that is not form-encoded, has no payload, is not JSON, or lacks the user or
// the action returns ErrMalformed; a well-formed interaction other than block_actions returns
// ErrUnsupported. Call it only after Verify has accepted the same raw bytes.
func ParseClick(body []byte) (Click, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return Click{}, fmt.Errorf("%w: body is not form-encoded: %w", ErrMalformed, err)
	}
	payload := form.Get("payload")
	if payload == "" {
		return Click{}, fmt.Errorf("%w: no payload field", ErrMalformed)
	}
	var cb slack.InteractionCallback
	if err := json.Unmarshal([]byte(payload), &cb); err != nil {
		return Click{}, fmt.Errorf("%w: payload is not an interaction: %w", ErrMalformed, err)
	}
	if cb.Type != slack.InteractionTypeBlockActions {
		return Click{}, fmt.Errorf("%w: type %q", ErrUnsupported, cb.Type)
	}
	if len(cb.ActionCallback.BlockActions) == 0 || cb.ActionCallback.BlockActions[0] == nil {
		return Click{}, fmt.Errorf("%w: block_actions without a block action", ErrMalformed)
	}
	a := cb.ActionCallback.BlockActions[0]
	if cb.User.ID == "" || a.ActionID == "" {
		return Click{}, fmt.Errorf("%w: block action without user or action_id", ErrMalformed)
	}

	c := Click{
		UserID:       cb.User.ID,
		UserName:     first(cb.User.Username, cb.User.Name),
		TeamID:       first(cb.Team.ID, cb.User.TeamID),
		EnterpriseID: cb.Enterprise.ID,
		AppID:        cb.APIAppID,
		ChannelID:    first(cb.Channel.ID, cb.Container.ChannelID),
		MessageTS:    first(cb.Container.MessageTs, cb.Message.Timestamp),
		ResponseURL:  cb.ResponseURL,
		ActionID:     a.ActionID,
		Value:        a.Value,
		TriggerID:    cb.TriggerID,
		ActionTS:     first(a.ActionTs, cb.ActionTs),
	}
	return c, nil
}

// first returns the first non-empty string: Slack repeats some fields in several places and not
// every surface fills all of them.
func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
