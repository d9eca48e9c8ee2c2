// Package slackmessage owns the incident's Slack message: how it looks, how it reaches Slack,
// and what the store records of its delivery. The incident store, not Slack, is the record;
// this package shows it.
//
// # Rendering (render.go, confirm.go, reboot.go, button.go, text.go, plain.go, severity.go)
//
// Render draws a keywarden incident as Slack Block Kit: the one channel message that is posted
// when an incident opens and then updated in place; ThreadText the thread replies that record
// each timeline entry; Reminder the reminders; ConfirmSteps and RebootBlock the dialogs of the
// buttons. Rendering is a pure function of the incident and the time, so the message can be
// rebuilt from the stored incident at any moment (a failed chat.update is repaired by the next
// one) and golden files pin it down. Everything that came from outside — CloudTrail's user
// agent, identifiers, timeline details — is escaped, and Block Kit's size limits are enforced
// here, because Slack rejects a whole message that breaks one of them.
//
// # Web API calls (api.go)
//
// Client makes Slack's Web API calls that show an incident: it posts the incident's one
// top-level message, updates it in place, replies in its thread, and finds a message or a reply
// again by its message metadata when Slack's answer to a post was lost. It degrades rather than
// go silent — a plain-text message when Slack rejects the blocks, a new message when the old one
// is gone, conversations.join when the bot is not in a public channel, a wait for Retry-After
// when it fits the time left — and classifies what it cannot fix: an *UndeliverableError says
// Slack refuses in a way no retry can fix (the channel is gone or archived, the token revoked,
// a scope missing), a *PendingError that the call should be tried again later. Nothing in it
// logs, and errors carry Slack's error code, never the request, so the bot token cannot leak
// through them.
//
// # Delivery from the outbox (deliver.go)
//
// Announcer delivers an incident to Slack from its outbox — the message changes and timeline
// entries Slack has not shown yet (incident.Incident.SlackOutbox) — and records what it
// delivered. The domain announces nothing: intake's and rdstrack's outcomes carry the
// incidents they changed, and the edge announces them — KeyEventFunction, RdsEventFunction,
// SlackActionFunction and RemediateFunction through AnnounceOrWarn (warn.go), the one copy of
// "announce, log a warning, carry on"; the reconciler on every run, for what its backstop
// opened, and from its one-minute outbox pass.
//
// The store is the record and is always written before anything here runs, so every change is
// a durable pending delivery before any Slack call. Delivery is serialised per incident by a
// short lease (a store claim) that is released the moment an attempt ends, failed or not: a
// failed attempt never silences the incident, and whoever calls next — the next event, the
// one-minute retry pass (reconcile.RetryOutbox), the reconciler — delivers what is still
// pending. A caller that finds the lease taken leaves its change to the holder, who reads the
// incident again after releasing and delivers anything that arrived meanwhile; so however many
// invocations deliver at once, each timeline entry is replied once in the thread (the store's
// SetSlack records each reply before the next), and the incident has one top-level message
// (Client finds a message whose post lost its answer by its metadata before posting again).
//
// When Slack refuses in a way retrying cannot fix, or has not carried a new incident within
// GiveUpAfter, the incident's slack_delivery becomes failed with the reason, the
// SlackUndeliverable metric counts it (template.yaml alarms on it), and the incident's summary
// goes to the optional SNS topic (package page). Critical incidents go to the topic on open
// whatever Slack does.
//
// # What it must not import
//
// slackmessage imports slack-go, incident and page (the SNS summary's reasons and metric
// names), and not the AWS SDK: the store, the SNS topic and the metrics are behind the Store,
// Pager and Metrics interfaces. It must not import a package that decides (intake, lifecycle,
// rdstrack, reconcile, remedy, approval) nor the functions' wiring (startup). The other way
// round, the domain must not import it: intake, lifecycle, rdstrack and incident return what
// changed and know nothing of Slack. cmd/keywarden's TestImportBoundaries checks both.
package slackmessage
