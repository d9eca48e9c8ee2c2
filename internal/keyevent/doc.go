// Package keyevent turns one EventBridge event about a KMS key into the facts keywarden acts on:
// which key, what happened to it (loss, restore, or a change of who may use it), when, and who
// did it. It takes the raw envelope bytes so that it depends on nothing but the standard library
// and the incident model; handlers pass their event through untouched.
//
// Two kinds of event arrive. CloudTrail records ("AWS API Call via CloudTrail", source aws.kms,
// eventSource kms.amazonaws.com) carry the caller and the request, and KMS's own events ("KMS CMK
// Deletion", "KMS Imported Key Material Expiration") carry only the key. The fields differ in how
// far they can be trusted, and the parser reads them in that order:
//
//   - detail.resources[].ARN is the only place a CloudTrail record names the key ARN for every
//     key-scoped call, whatever the caller passed. Older records omit the entry's "type", some
//     fixtures carry "resources": null, and DisconnectCustomKeyStore has no resources at all.
//   - responseElements.keyId holds the key ARN only in records written since December 2022; older
//     DisableKey and EnableKey records, and PutKeyPolicy, RevokeGrant and RetireGrant, have
//     "responseElements": null.
//   - requestParameters.keyId is whatever the caller typed: a key ID or a key ARN. It is null for
//     RetireGrant. An alias is never a key ARN; one is returned only when nothing better exists,
//     for the resolver to normalise.
//   - The envelope's resources are empty for CloudTrail events; KMS's own events put the key ARN
//     there and the bare key ID in detail["key-id"].
//   - responseElements.deletionDate is a human, zone-less string spelt at least three ways. It is
//     kept as text for display; the deletion date keywarden counts down to comes from DescribeKey.
//
// Delivery is best effort and may repeat (KMS retries its deletion event), and failed calls can
// arrive unless the rule filters them, so an Event says whether the call failed and callers
// deduplicate on the key. Every error Parse returns is permanent: retrying the same bytes cannot
// help, so the caller logs it and acknowledges the event.
//
// Boundaries: it owns turning KMS's EventBridge events into typed Events; it must not import the
// AWS SDK, Slack or the store (it reads bytes, nothing more).
package keyevent
