package awstest

import (
	"bytes"
	"cmp"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FaultProxy is an HTTP reverse proxy between an AWS SDK client and moto that can lose the
// answer to a chosen request: it forwards the request, lets it land, and then gives the client
// an HTTP 500 (or a dropped connection) instead of moto's answer, so the SDK sends it again.
// That is the failure a conditional write must survive: the write happened, the caller does not
// know it, and the retry meets its own effect.
type FaultProxy struct {
	// URL is the proxy's endpoint, for Config.
	URL    string
	target string
	client *http.Client

	mu     sync.Mutex
	faults []*Fault
}

// FaultMode is how a Fault answers the client once the request landed.
type FaultMode int

const (
	// Answer500 answers HTTP 500 with an InternalServerError body, which the SDK's standard
	// retryer retries.
	Answer500 FaultMode = iota
	// DropConnection closes the connection without an answer.
	DropConnection
	// Answer answers Status with Body (and ContentType) in moto's place, without forwarding:
	// the request never lands. It stands for what moto cannot produce (an
	// AccessDeniedException, a DescribeEvents history) and for a service that refuses a call
	// (KMSInvalidStateException while KMS propagates a change, a throttle).
	Answer
)

// Fault is one armed fault: it fires on the next Times requests that Match accepts.
type Fault struct {
	// Match decides from the request and its body whether the fault applies; Op gives one
	// that matches a JSON protocol operation by its X-Amz-Target header.
	Match func(r *http.Request, body []byte) bool
	Times int
	Mode  FaultMode
	// Status, Body and ContentType are the answer of an Answer fault; Status defaults to 400
	// and ContentType to application/x-amz-json-1.1 (a JSON protocol error such as
	// {"__type":"KMSInvalidStateException","message":"…"}).
	Status      int
	Body        []byte
	ContentType string

	fired int
}

// Fired reports how many times the fault fired.
func (f *Fault) Fired() int {
	return f.fired
}

// Op matches requests of the JSON protocol operation op (the X-Amz-Target header ends with
// "."+op, as in "DynamoDB_20120810.TransactWriteItems").
func Op(op string) func(*http.Request, []byte) bool {
	return func(r *http.Request, _ []byte) bool {
		return strings.HasSuffix(r.Header.Get("X-Amz-Target"), "."+op)
	}
}

// AccessDenied is the body of an AWS JSON-protocol AccessDeniedException (KMS, DynamoDB), for an
// Answer fault with Status 400 and ContentType "application/x-amz-json-1.1".
func AccessDenied(msg string) []byte {
	return []byte(`{"__type":"AccessDeniedException","message":"` + msg + `"}`)
}

// NewFaultProxy starts a proxy in front of target (a moto endpoint) and stops it when the test
// ends.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	p := &FaultProxy{target: strings.TrimSuffix(target, "/"), client: &http.Client{}}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Arm adds f; it fires on the next f.Times matching requests.
func (p *FaultProxy) Arm(f *Fault) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, f)
	return f
}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if f := p.takeMode(r, body, Answer); f != nil {
		// The SDK checks X-Amz-Crc32 on every answer, an injected one too.
		w.Header().Set("Content-Type", cmp.Or(f.ContentType, "application/x-amz-json-1.1"))
		w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(f.Body)), 10))
		w.WriteHeader(cmp.Or(f.Status, http.StatusBadRequest))
		_, _ = w.Write(f.Body)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if f := p.take(r, body); f != nil {
		if f.Mode == DropConnection {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
		}
		msg := []byte(`{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected by FaultProxy after the request landed"}`)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		// DynamoDB's client checks every answer's body against this header.
		w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(msg)), 10))
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(msg)
		return
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

// take returns the armed after-landing fault that fires on this request, if any, and counts it.
func (p *FaultProxy) take(r *http.Request, body []byte) *Fault {
	if f := p.takeMode(r, body, Answer500); f != nil {
		return f
	}
	return p.takeMode(r, body, DropConnection)
}

// takeMode returns the armed fault of mode that fires on this request, if any, and counts it.
// Times < 0 fires on every matching request.
func (p *FaultProxy) takeMode(r *http.Request, body []byte, mode FaultMode) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.faults {
		if f.Mode == mode && (f.Times < 0 || f.fired < f.Times) && f.Match(r, body) {
			f.fired++
			return f
		}
	}
	return nil
}
