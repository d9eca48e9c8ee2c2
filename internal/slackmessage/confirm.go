package slackmessage

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/keywarden/keywarden/internal/incident"
)

// notFixable says, for people, what to do instead when one click cannot fix inc, or "" when it
// can. The rule is the model's (incident.Incident.Fixable); this only words its answer.
func notFixable(inc incident.Incident) string {
	err := inc.Fixable()
	var nf *incident.NotFixableError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &nf):
		return nf.Instead
	}
	return "Not right now: the " + err.Error() + "."
}

// ConfirmSteps is what the remediate button's confirm dialog promises: the steps of
// inc.Plan() that run, in the plan's order, and the dialog's text listing them. The plan has
// one owner, the incident; the dialog shows its running steps and nothing else, so it cannot
// promise a step the run skips. RemediateFunction plans again from live state when it runs.
//
// The text is one numbered line per run of steps of one kind. Slack rejects a confirm text
// over 300 characters, so resource names are cut at a name boundary ("… and N more"), down to
// only a count when even one name does not fit; every step kind is always listed. It returns
// no steps and "" when one click cannot fix inc or nothing would run.
func ConfirmSteps(inc incident.Incident) (steps []incident.PlannedStep, text string) {
	plan, err := inc.Plan()
	if err != nil {
		return nil, ""
	}
	for _, s := range plan {
		if s.Runs() {
			steps = append(steps, s)
		}
	}
	if len(steps) == 0 {
		return nil, ""
	}
	groups := groupSteps(steps)
	intro := "For key " + truncate(keyLabel(inc), 40) + " this will:\n"
	most := 0
	for _, g := range groups {
		most = max(most, len(g.targets))
	}
	for n := most; ; n-- {
		text = intro + strings.Join(confirmLines(inc, groups, n), "\n")
		if utf8.RuneCountInString(text) <= maxConfirmText || n == 0 {
			break
		}
	}
	return steps, truncate(text, maxConfirmText)
}

// stepGroup is a run of consecutive planned steps of one kind.
type stepGroup struct {
	kind    incident.StepKind
	targets []string
}

func groupSteps(steps []incident.PlannedStep) []stepGroup {
	var groups []stepGroup
	for _, s := range steps {
		if n := len(groups); n > 0 && groups[n-1].kind == s.Kind {
			groups[n-1].targets = append(groups[n-1].targets, s.Target)
			continue
		}
		groups = append(groups, stepGroup{kind: s.Kind, targets: []string{s.Target}})
	}
	return groups
}

// confirmLines renders the groups as numbered lines, naming at most n targets per group.
func confirmLines(inc incident.Incident, groups []stepGroup, n int) []string {
	lines := make([]string, 0, len(groups))
	for i, g := range groups {
		var line string
		switch g.kind {
		case incident.StepCancelKeyDeletion:
			line = fmt.Sprintf("CancelKeyDeletion (key is %s)", inc.KeyState)
		case incident.StepEnableKey:
			line = "EnableKey"
		case incident.StepWaitEnabled:
			line = "Wait until DescribeKey says Enabled"
		case incident.StepStartDBCluster:
			line = "StartDBCluster: " + cutNames(g.targets, n, "cluster", "clusters")
		case incident.StepRebootDBInstance:
			line = "RebootDBInstance: " + cutNames(g.targets, n, "instance", "instances")
		default:
			line = string(g.kind) + ": " + cutNames(g.targets, n, "target", "targets")
		}
		lines = append(lines, fmt.Sprintf("%d. %s", i+1, line))
	}
	return lines
}

// cutNames lists at most n names, cutting at a name boundary with "… and N more"; with n 0 it
// gives only the count ("40 clusters").
func cutNames(names []string, n int, one, many string) string {
	if n <= 0 && len(names) > n {
		return plural(len(names), one, many)
	}
	return listNames(names, n)
}
