package incident

// KeyStateDeleted is not a KMS KeyState: keywarden records it once DescribeKey answers
// NotFoundException for a key that existed, or KMS announced "KMS CMK Deletion".
const KeyStateDeleted = "Deleted"

// KeyUnusable reports whether Aurora can no longer use a key in KMS state s. Disabled and
// PendingDeletion keys "can't be used in any cryptographic operations"; so can't a multi-Region
// primary in PendingReplicaDeletion, a key whose imported material was deleted or expired
// (PendingImport), or a key in a disconnected custom key store (Unavailable).
func KeyUnusable(s string) bool {
	switch s {
	case "Disabled", "PendingDeletion", "PendingReplicaDeletion", "PendingImport", "Unavailable", KeyStateDeleted:
		return true
	}
	return false
}
