package approval

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// Sign returns the X-Slack-Signature and X-Slack-Request-Timestamp headers Slack would send with
// body at time ts, signed with secret. It is for tests and the local demo, which must sign clicks
// for real so that they pass through the same Verify as production traffic; keywarden never signs
// anything Slack sends.
func Sign(secret string, ts time.Time, body []byte) http.Header {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	h := make(http.Header, 2)
	h.Set(headerTimestamp, stamp)
	h.Set(headerSignature, signatureVersion+"="+hex.EncodeToString(mac(secret, stamp, body)))
	return h
}
