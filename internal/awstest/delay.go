package awstest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Call is one AWS API request that went through a DelayProxy.
type Call struct {
	// Op is the operation called: the Query protocol's Action form value (RDS:
	// "DescribeDBInstances") or the operation part of the JSON protocol's X-Amz-Target header
	// (KMS: "TrentService.DescribeKey" gives "DescribeKey"); "unknown" when neither is there.
	Op string
	// Params are the request's parameters: the Query protocol's form values as sent
	// ("Filters.Filter.1.Name", "Marker"), or the JSON protocol body's top-level string fields
	// ("KeyId").
	Params url.Values
	// Start is when the proxy received the request; End is when it had written the whole
	// answer, the added delay included.
	Start, End time.Time
}

// DelayProxy is a reverse proxy on loopback that holds every request for a fixed delay before
// passing it on, so that a local AWS stand-in answers with the round-trip time of a regional
// endpoint, and that records every call it passed. Point an SDK client at URL (with Config).
type DelayProxy struct {
	// URL is the proxy's endpoint, http://127.0.0.1:<port>.
	URL string

	delay time.Duration
	mu    sync.Mutex
	calls []Call
}

// Delay starts a DelayProxy in front of target (an endpoint such as Moto's) adding delay to
// every call, and stops it when the test or benchmark ends. A zero delay only records.
func Delay(tb testing.TB, target string, delay time.Duration) *DelayProxy {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatalf("delay proxy target %q: %v", target, err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Many calls in flight at once is the point of measuring: keep their connections open.
	tr.MaxIdleConnsPerHost = 128
	rp.Transport = tr
	p := &DelayProxy{delay: delay}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := Call{Start: time.Now()}
		c.Op, c.Params = describe(r)
		if p.delay > 0 {
			select {
			case <-time.After(p.delay):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
		c.End = time.Now()
		p.mu.Lock()
		p.calls = append(p.calls, c)
		p.mu.Unlock()
	}))
	tb.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	p.URL = srv.URL
	return p
}

// Calls returns the calls passed since the proxy started or was last Reset, in the order they
// ended.
func (p *DelayProxy) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// Reset forgets the calls recorded so far.
func (p *DelayProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = nil
}

// LongestChain returns the length of the longest sequence of calls in which each call started
// only after the previous one had ended (End ≤ Start, as the proxy saw them): the calls that
// ran strictly one after another, however the caller scheduled them. With a delay d per call,
// no run of these calls can take less than LongestChain × d, whatever the concurrency.
// Calls that overlapped in time are never in the same chain.
func LongestChain(calls []Call) int {
	cs := slices.Clone(calls)
	slices.SortFunc(cs, func(a, b Call) int { return a.Start.Compare(b.Start) })
	// chain[i] is the longest chain ending with cs[i]. A predecessor ends before cs[i] starts,
	// so it also started earlier and comes before i in this order.
	chain := make([]int, len(cs))
	longest := 0
	for i, c := range cs {
		chain[i] = 1
		for j := range i {
			if !cs[j].End.After(c.Start) && chain[j]+1 > chain[i] {
				chain[i] = chain[j] + 1
			}
		}
		longest = max(longest, chain[i])
	}
	return longest
}

// describe names the request's operation and parameters, reading the body and putting it back
// for the proxy to forward.
func describe(r *http.Request) (string, url.Values) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		params := url.Values{}
		var fields map[string]any
		if json.Unmarshal(body, &fields) == nil {
			for k, v := range fields {
				if s, ok := v.(string); ok {
					params.Set(k, s)
				}
			}
		}
		return t[strings.LastIndex(t, ".")+1:], params
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") == "" {
		return "unknown", url.Values{}
	}
	return form.Get("Action"), form
}
