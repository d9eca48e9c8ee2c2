package keyevent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/internal/keyevent"
)

// FuzzParse feeds Parse mutations of every sample event: it must never panic, and an event it
// accepts must name what happened and which key (or custom key store) it happened to.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(eventsDir, "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range files {
		raw, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"id":"x","source":"aws.kms","detail-type":"KMS CMK Deletion","time":"2026-01-01T00:00:00Z","region":"us-east-1","account":"123456789012","resources":["alias/x"],"detail":{"key-id":"alias/y"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))

	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := keyevent.Parse(raw)
		if err != nil {
			return
		}
		if e.Name == "" {
			t.Errorf("Parse(%q): got Name %q with nil error, want a name", raw, e.Name)
		}
		if e.KeyRef == "" && e.CustomKeyStoreID == "" {
			t.Errorf("Parse(%q): got no KeyRef and no CustomKeyStoreID with nil error, want one", raw)
		}
		if e.Kind == "" || e.ID == "" || e.Time.IsZero() || e.Region == "" || e.Account == "" {
			t.Errorf("Parse(%q): got %+v with nil error, want Kind, ID, Time, Region and Account set", raw, e)
		}
	})
}
