package slackmessage

import (
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
)

// ActionRebootInstance is the action_id of an instance's own Reboot instance button: a
// contract with the action handler and with Slack, which echoes it back.
const ActionRebootInstance = "reboot_instance"

// RebootBlockID is the block_id of the actions block holding the Reboot instance buttons.
const RebootBlockID = "instance_reboots"

// maxRebootButtons keeps the block inside Block Kit's 25 elements per actions block.
const maxRebootButtons = 25

// RebootButtonValue is the value of instance's Reboot instance button on the message of the
// incident at version: "<instance>@<ButtonValue>". Instance identifiers never contain "@".
func RebootButtonValue(id string, version int64, instance string) string {
	return instance + "@" + ButtonValue(id, version)
}

// ParseRebootButtonValue reverses RebootButtonValue; anything else is ErrButtonValue.
func ParseRebootButtonValue(v string) (id string, version int64, instance string, err error) {
	instance, rest, ok := strings.Cut(v, "@")
	if !ok || instance == "" || strings.ContainsAny(instance, ": \t\r\n") {
		return "", 0, "", fmt.Errorf("parse reboot button value %q: %w", truncate(v, 80), ErrButtonValue)
	}
	id, version, err = ParseButtonValue(rest)
	return id, version, instance, err
}

// RebootBlock is the block of Reboot instance buttons, one per instance that still reports
// lost key access a grace period after the key came back (incident.Instance.NeedsReboot) and
// whose reboot incident.RebootPlan allows; nil when there is none. Each has its own confirm
// dialog, which says that a reboot of a writer is an outage. Nothing in the one-click fix
// reboots; only these buttons, each approved like remediation, do.
func RebootBlock(inc incident.Incident) *slack.ActionBlock {
	if inc.State.Closed() {
		return nil
	}
	var elems []slack.BlockElement
	for _, in := range inc.Instances {
		if len(elems) == maxRebootButtons {
			break
		}
		if !inc.RebootPlan(in.Identifier).Runs() || (in.Reboot != nil && (in.Reboot.State == incident.RemediationApproved || in.Reboot.State == incident.RemediationRunning)) {
			continue
		}
		text := fmt.Sprintf("RebootDBInstance %s (cluster %s). It still reports it cannot use the key although the key is Enabled. "+
			"A reboot interrupts its connections; if it is the writer, the cluster is down until it is back.", in.Identifier, in.ClusterIdentifier)
		elems = append(elems, slack.NewButtonBlockElement(ActionRebootInstance, RebootButtonValue(inc.ID, inc.Version, in.Identifier),
			plain(truncate("Reboot instance "+in.Identifier, maxButtonText))).
			WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(
				plain("Reboot "+truncate(in.Identifier, 80)+"?"),
				plain(truncate(text, maxConfirmText)),
				plain("Reboot"), plain("Cancel")).WithStyle(slack.StyleDanger)))
	}
	if len(elems) == 0 {
		return nil
	}
	return slack.NewActionBlock(RebootBlockID, elems...)
}
