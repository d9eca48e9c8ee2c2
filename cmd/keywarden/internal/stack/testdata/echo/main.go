// Command echo is a test-only Lambda function for package stack (the local stack): it returns the event it
// was given and the values of the environment variables the event names, and fails with the
// event's "fail" message when there is one, so tests can see exactly what the emulator passed
// in and how a handler error comes back out.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

type request struct {
	// Env names the environment variables to report back.
	Env []string `json:"env"`
	// Fail, when set, makes the handler return an error with this message.
	Fail string `json:"fail"`
	// Panic, when set, makes the handler panic with this message.
	Panic string `json:"panic"`
	// Exit, when set, ends the process with this status mid-invocation, as a crash would.
	Exit int `json:"exit"`
	// SleepMS delays the response, to run into the function timeout.
	SleepMS int `json:"sleep_ms"`
}

type response struct {
	Event json.RawMessage   `json:"event"`
	Env   map[string]string `json:"env"`
}

func handle(_ context.Context, event json.RawMessage) (response, error) {
	var req request
	if err := json.Unmarshal(event, &req); err != nil {
		return response{}, fmt.Errorf("decode event: %w", err)
	}
	time.Sleep(time.Duration(req.SleepMS) * time.Millisecond)
	switch {
	case req.Fail != "":
		return response{}, errors.New(req.Fail)
	case req.Panic != "":
		panic(req.Panic)
	case req.Exit != 0:
		os.Exit(req.Exit)
	}
	// Log a line so tests can check that function logs reach stderr, not the result.
	fmt.Fprintln(os.Stdout, `{"level":"INFO","msg":"echo invoked"}`)
	env := make(map[string]string, len(req.Env))
	for _, name := range req.Env {
		if v, ok := os.LookupEnv(name); ok {
			env[name] = v
		}
	}
	return response{Event: event, Env: env}, nil
}

func main() {
	lambda.Start(handle)
}
