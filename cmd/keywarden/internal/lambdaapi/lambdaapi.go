// Package lambdaapi serves Lambda's Invoke API (POST /2015-03-31/functions/{FunctionName}/
// invocations) on loopback, so that one function's invocation of another — SlackActionFunction's
// asynchronous hand-off to RemediateFunction — runs the real bootstrap, as on AWS, when
// AWS_ENDPOINT_URL_LAMBDA points here. It speaks Lambda's protocol: invocation types, error
// types in X-Amzn-ErrorType, 429 when too many asynchronous invocations wait.
//
// It owns the protocol only; running a function is its Runner's job (the local stack). It must
// not import the rest of the local stack, the AWS SDK or keywarden's product packages.
package lambdaapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxPayload is Lambda's limit on a synchronous invocation's request payload (6 MB); it is
// applied to asynchronous ones too.
const maxPayload = 6 << 20

// maxLoggedResult bounds how much of an asynchronous invocation's result is logged.
const maxLoggedResult = 1024

// Runner runs the functions the API serves.
type Runner interface {
	// Function reports an error when logicalID cannot be run (its source is missing).
	Function(logicalID string) (string, error)
	// Invoke runs one invocation; functionErr reports that the function failed, and result
	// then holds Lambda's error object.
	Invoke(ctx context.Context, logicalID string, event []byte, env map[string]string) (result []byte, functionErr bool, err error)
}

// Config describes an API. Zero MaxAsync and MaxQueued take 4 and 64.
type Config struct {
	Runner Runner
	// Functions are the logical IDs it serves.
	Functions []string
	// Region and AccountID name the functions in ARNs of error messages.
	Region, AccountID string
	// MaxAsync bounds the asynchronous (Event) invocations that run at once; MaxQueued those
	// accepted and not yet finished, beyond which it answers 429 TooManyRequestsException, as
	// Lambda does when throttled.
	MaxAsync, MaxQueued int
	// Log receives one JSON line per invocation.
	Log *slog.Logger
}

// API serves Lambda's Invoke API over a Runner: what aws-sdk-go-v2's lambda client sends when
// AWS_ENDPOINT_URL_LAMBDA points here.
type API struct {
	run       Runner
	ids       map[string]bool
	region    string
	accountID string
	log       *slog.Logger

	// ctx is the parent of asynchronous invocations: cancelled when the services stop.
	ctx context.Context
	// slots bounds the asynchronous invocations that run at once; queue bounds those accepted
	// and not yet finished, beyond which Lambda's 429 answers.
	slots chan struct{}
	queue chan struct{}
	wg    sync.WaitGroup
}

// New returns the API for c. Asynchronous invocations run under ctx: they are cancelled when it
// ends.
func New(ctx context.Context, c Config) *API {
	if c.MaxAsync <= 0 {
		c.MaxAsync = 4
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = 64
	}
	ids := map[string]bool{}
	for _, id := range c.Functions {
		ids[id] = true
	}
	return &API{
		run: c.Runner, ids: ids, region: c.Region, accountID: c.AccountID, log: c.Log, ctx: ctx,
		slots: make(chan struct{}, c.MaxAsync), queue: make(chan struct{}, c.MaxQueued),
	}
}

// Wait returns when every asynchronous invocation has ended.
func (a *API) Wait() { a.wg.Wait() }

// lambdaError writes one of Lambda's error responses: the type in X-Amzn-ErrorType, which the
// SDK maps to its typed errors (types.ResourceNotFoundException, …), and in the body.
func lambdaError(w http.ResponseWriter, status int, errType, msg string) {
	w.Header().Set("X-Amzn-ErrorType", errType)
	kind := "User"
	if status >= 500 {
		kind = "Service"
	}
	respondJSON(w, status, map[string]string{"Type": kind, "Message": msg, "message": msg, "__type": errType})
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	requestID := newRequestID()
	w.Header().Set("X-Amzn-RequestId", requestID)
	name := r.PathValue("function")
	logicalID, ok := a.resolve(name)
	if !ok {
		lambdaError(w, http.StatusNotFound, "ResourceNotFoundException",
			fmt.Sprintf("Function not found: arn:aws:lambda:%s:%s:function:%s", a.region, a.accountID, name))
		return
	}
	if _, err := a.run.Function(logicalID); err != nil {
		lambdaError(w, http.StatusNotFound, "ResourceNotFoundException", err.Error())
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		lambdaError(w, http.StatusBadRequest, "InvalidRequestContentException", "Could not read request body: "+err.Error())
		return
	}
	if len(payload) > maxPayload {
		lambdaError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException",
			fmt.Sprintf("Request must be smaller than %d bytes for the InvokeFunction operation", maxPayload))
		return
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = []byte("{}")
	}
	if !json.Valid(payload) {
		lambdaError(w, http.StatusBadRequest, "InvalidRequestContentException", "Could not parse request body into json")
		return
	}
	log := a.log.With("function", logicalID, "request_id", requestID)

	switch typ := r.Header.Get("X-Amz-Invocation-Type"); typ {
	case "", "RequestResponse":
		start := time.Now()
		result, functionErr, err := a.run.Invoke(r.Context(), logicalID, payload, nil)
		if err != nil {
			log.Error("invocation failed", "invocation_type", "RequestResponse", "error", err)
			lambdaError(w, http.StatusInternalServerError, "ServiceException", err.Error())
			return
		}
		level := slog.LevelInfo
		if functionErr {
			level = slog.LevelWarn
		}
		log.Log(r.Context(), level, "invocation finished", "invocation_type", "RequestResponse",
			"duration_ms", time.Since(start).Milliseconds(), "function_error", functionErr)
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		if functionErr {
			// Lambda's mark of a failed invocation: the status stays 200.
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(result)
	case "Event":
		select {
		case a.queue <- struct{}{}:
		default:
			lambdaError(w, http.StatusTooManyRequests, "TooManyRequestsException",
				fmt.Sprintf("Rate Exceeded: %d asynchronous invocations are waiting", cap(a.queue)))
			return
		}
		a.wg.Add(1)
		go a.runAsync(log, logicalID, payload)
		log.Info("invocation queued", "invocation_type", "Event")
		w.WriteHeader(http.StatusAccepted)
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
	default:
		lambdaError(w, http.StatusBadRequest, "InvalidParameterValueException",
			fmt.Sprintf("1 validation error detected: Value '%s' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]", typ))
	}
}

// runAsync runs one asynchronous invocation once a slot is free and logs its outcome. Unlike
// Lambda it does not retry a failed invocation: the log says it failed, and the caller of the
// local stack decides.
func (a *API) runAsync(log *slog.Logger, logicalID string, payload []byte) {
	defer a.wg.Done()
	defer func() { <-a.queue }()
	select {
	case a.slots <- struct{}{}:
	case <-a.ctx.Done():
		log.Warn("asynchronous invocation dropped: the local services are stopping")
		return
	}
	defer func() { <-a.slots }()
	start := time.Now()
	result, functionErr, err := a.run.Invoke(a.ctx, logicalID, payload, nil)
	attrs := []any{"invocation_type", "Event", "duration_ms", time.Since(start).Milliseconds()}
	switch {
	case err != nil:
		log.Error("asynchronous invocation failed", append(attrs, "error", err)...)
	case functionErr:
		log.Warn("asynchronous invocation finished", append(attrs, "function_error", true, "result", truncateForLog(result, maxLoggedResult))...)
	default:
		log.Info("asynchronous invocation finished", append(attrs, "function_error", false, "result", truncateForLog(result, maxLoggedResult))...)
	}
}

func truncateForLog(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// resolve maps a FunctionName as Lambda accepts it to a logical ID of the stack: the logical
// ID itself ("RemediateFunction"), a qualified name ("RemediateFunction:live"), a full or
// partial ARN ("arn:aws:lambda:us-east-1:123456789012:function:RemediateFunction",
// "123456789012:function:RemediateFunction"), or a name SAM generated from the logical ID
// ("keywarden-RemediateFunction-1A2B3C4D5E6F"), as long as only one function matches.
func (a *API) resolve(name string) (string, bool) {
	ids := a.ids
	if ids[name] {
		return name, true
	}
	fn := name
	parts := strings.Split(name, ":")
	switch {
	case len(parts) >= 7 && parts[0] == "arn": // arn:aws:lambda:region:account:function:name[:qualifier]
		fn = parts[6]
	case len(parts) >= 3 && parts[1] == "function": // account:function:name[:qualifier]
		fn = parts[2]
	case len(parts) == 2: // name:qualifier
		fn = parts[0]
	}
	if ids[fn] {
		return fn, true
	}
	var found []string
	for _, seg := range strings.FieldsFunc(fn, func(r rune) bool { return r == '-' || r == '_' }) {
		if ids[seg] && !slices.Contains(found, seg) {
			found = append(found, seg)
		}
	}
	if len(found) == 1 {
		return found[0], true
	}
	return "", false
}

func respondJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
