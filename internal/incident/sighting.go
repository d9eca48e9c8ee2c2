package incident

import "time"

// Sighting is a loss event for a key that no Aurora resource depends on: recorded, counted,
// never escalated.
type Sighting struct {
	KeyARN    string    `json:"key_arn"`
	EventName string    `json:"event_name"`
	At        time.Time `json:"at"`
	Actor     Actor     `json:"actor"`
	// Count is how many events were seen for the key; a store's RecordSighting ignores it and
	// adds one.
	Count int    `json:"count"`
	Note  string `json:"note,omitempty"`
}
