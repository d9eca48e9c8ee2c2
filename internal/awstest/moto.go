// Package awstest gives integration tests a real AWS API stand-in: moto's server on loopback.
//
// A test package calls Moto once per test (or per TestMain) and gets an aws.Config whose
// clients reach that server. When KEYWARDEN_TEST_MOTO_URL is set (CI starts one moto for the
// whole run), that server is used; otherwise the package starts its own moto_server on a free
// loopback port and stops it when the tests end.
//
// It also decides, for every test that needs a real local component (moto here, the Lambda
// Runtime Interface Emulator for the local stack's tests, see Require), when such a test runs:
// under `go test -short` (the fast lane, `make check`) it skips with a message naming what it
// needs; otherwise it skips only when the component is missing and CI is not set; in CI a
// missing component fails the run.
//
// Boundaries: test support only — no product package may import it (TestImportBoundaries); it may
// import the AWS SDK's config and clients it starts moto for, and must not import keywarden's
// product packages.
package awstest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Region is the region every local resource lives in.
const Region = "us-east-1"

// AccountID is moto's default account.
const AccountID = "123456789012"

var (
	startOnce sync.Once
	sharedURL string
	startErr  error
	motoCmd   *exec.Cmd
)

// Main runs a test binary's tests and then stops the moto server it started, if any. Call it
// from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if motoCmd != nil && motoCmd.Process != nil {
		_ = motoCmd.Process.Signal(syscall.SIGTERM)
	}
	os.Exit(code)
}

// Require runs before a test that needs what names: under -short it skips the test, saying it
// needs what; otherwise it calls check (which may be nil) and, when check fails, skips the test
// or — with CI set — fails it, so a CI machine that lacks the component cannot pass by skipping.
func Require(tb testing.TB, what string, check func() error) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("needs %s: skipped under -short (run without -short, or make test)", what)
		return
	}
	if check == nil {
		return
	}
	switch err := check(); {
	case err == nil:
	case os.Getenv("CI") == "":
		tb.Skipf("needs %s, which is not available: %v", what, err)
	default:
		tb.Fatalf("needs %s, which is not available in CI: %v", what, err)
	}
}

// motoWhat is what Require says a moto test needs.
const motoWhat = "moto_server (pip install 'moto[server]', or set KEYWARDEN_TEST_MOTO_URL)"

// RequireMoto is Require for a test that starts moto_server itself (through the local stack).
func RequireMoto(tb testing.TB) {
	tb.Helper()
	Require(tb, motoWhat, func() error {
		_, err := exec.LookPath("moto_server")
		return err
	})
}

// Moto returns the endpoint of a running moto server, starting one for this test binary if
// needed. Each caller should create resources with unique names: the server is shared by
// every test in the package. It skips or fails as Require says.
func Moto(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("KEYWARDEN_TEST_MOTO_URL"); u != "" {
		Require(t, motoWhat, nil)
		return u
	}
	Require(t, motoWhat, func() error {
		startOnce.Do(func() {
			motoCmd, sharedURL, startErr = startMoto(nil)
		})
		if startErr != nil {
			return fmt.Errorf("start moto_server: %w", startErr)
		}
		return nil
	})
	return sharedURL
}

// Config returns an aws.Config for the moto endpoint, with the fixed test credentials moto accepts.
func Config(t testing.TB, endpoint string) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(Region),
		config.WithBaseEndpoint(endpoint),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
		config.WithRetryMaxAttempts(2),
	)
	if err != nil {
		t.Fatalf("load aws config: %v", err)
	}
	return cfg
}

// OwnMoto starts a moto server for the caller alone, with env ("NAME=value") added to its
// environment — for a test that needs moto configured differently (a raised quota) or must keep
// a large account away from the shared server — and stops it when the test ends. It skips or
// fails as Require says.
func OwnMoto(tb testing.TB, env ...string) string {
	tb.Helper()
	var cmd *exec.Cmd
	var url string
	Require(tb, motoWhat, func() error {
		var err error
		cmd, url, err = startMoto(env)
		if err != nil {
			return fmt.Errorf("start moto_server: %w", err)
		}
		return nil
	})
	tb.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
	return url
}

// startMoto runs moto_server on a free loopback port. The process is bounded: timeout(1) ends
// it after an hour even if the test binary dies without cleaning up, and passes on the SIGTERM
// that stops it normally.
func startMoto(env []string) (*exec.Cmd, string, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	cmd := exec.Command("timeout", "3600", bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	go func() { _ = cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return cmd, url, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, "", fmt.Errorf("moto_server on %s did not answer within 30s", url)
}

// Serial returns cfg with an HTTP client that lets one request at a time reach moto.
// moto_server handles requests on threads without a lock around a DynamoDB operation: a
// conditional write's check and write can interleave with another request's, and a cancelled
// TransactWriteItems restores a copy of the whole table taken before it ran, erasing writes that
// landed meanwhile. Real DynamoDB makes each request atomic; serialising requests gives moto that
// property while goroutines under test still race between their reads and conditional writes,
// which is the race keywarden's store must win.
func Serial(cfg aws.Config) aws.Config {
	cfg.HTTPClient = &serialHTTP{next: cfg.HTTPClient}
	return cfg
}

type serialHTTP struct {
	mu   sync.Mutex
	next aws.HTTPClient
}

func (c *serialHTTP) Do(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := c.next.Do(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
