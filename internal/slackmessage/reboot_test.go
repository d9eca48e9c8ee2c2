package slackmessage

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
)

func TestRebootBlock(t *testing.T) {
	key := "arn:aws:kms:us-east-1:111122223333:key/k"
	inc := incident.Incident{ID: "KW-1", Version: 7, State: incident.StateRemediating, KeyARN: key, KeyState: incident.KeyStateEnabled,
		Clusters: []incident.Cluster{{Identifier: "orders", Status: incident.StatusAvailable, LiveKeyARN: key}},
		Instances: []incident.Instance{
			{Identifier: "orders-1", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true},
			{Identifier: "orders-2", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: true}, // still watched
		}}
	b := RebootBlock(inc)
	if b == nil || b.BlockID != RebootBlockID || len(b.Elements.ElementSet) != 1 {
		t.Fatalf("got %+v, want one button, for orders-1", b)
	}
	btn := b.Elements.ElementSet[0].(*slack.ButtonBlockElement)
	if btn.ActionID != ActionRebootInstance || btn.Confirm == nil || !strings.Contains(btn.Confirm.Text.Text, "writer") ||
		utf8.RuneCountInString(btn.Confirm.Text.Text) > maxConfirmText {
		t.Errorf("button %+v: want reboot_instance with its own confirm saying a writer's reboot is an outage", btn)
	}
	id, version, instance, err := ParseRebootButtonValue(btn.Value)
	if err != nil || id != "KW-1" || version != 7 || instance != "orders-1" {
		t.Errorf("value %q parses to %q %d %q %v", btn.Value, id, version, instance, err)
	}
	for _, bad := range []string{"orders-1", "@KW-1:7", "orders-1@KW-1", "a b@KW-1:7", "orders-1@KW-1:07"} {
		if _, _, _, err := ParseRebootButtonValue(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// The key not Enabled, or the cluster now on another key: no button.
	inc.KeyState = incident.KeyStateDisabled
	if RebootBlock(inc) != nil {
		t.Error("a reboot button with the key Disabled")
	}
	inc.KeyState, inc.Clusters[0].LiveKeyARN = incident.KeyStateEnabled, key+"-other"
	if RebootBlock(inc) != nil {
		t.Error("a reboot button for a cluster now on another key")
	}
}
