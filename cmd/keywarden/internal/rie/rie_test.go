package rie

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		header      http.Header
		body        string
		wantFnErr   bool
		wantErr     bool
		wantTimeout bool
	}{
		{name: "result", status: 200, body: `{"incident_id":"x"}`},
		{name: "null result", status: 200, body: `null`},
		{name: "result with an errorType field among others", status: 200, body: `{"errorType":"x","errorMessage":"y","incident_id":"z"}`},
		{name: "handler error", status: 200, body: `{"errorMessage":"boom","errorType":"errorString"}`, wantFnErr: true},
		{name: "panic with stack", status: 200, body: `{"errorMessage":"boom","errorType":"string","stackTrace":[{"path":"a.go","line":1,"label":"f"}]}`, wantFnErr: true},
		{name: "header", status: 200, header: http.Header{"X-Amz-Function-Error": {"Unhandled"}}, body: `{"oops":1}`, wantFnErr: true},
		{name: "crash", status: 502, body: `{"errorType":"Runtime.ExitError","errorMessage":"exit status 3"}`, wantFnErr: true},
		{name: "crash, plain text", status: 502, body: `bad gateway`, wantFnErr: true},
		{name: "timeout", status: 200, body: "Task timed out after 3.00 seconds", wantFnErr: true, wantTimeout: true},
		{name: "emulator failure", status: 500, body: ``, wantErr: true},
		{name: "emulator busy", status: 400, body: ``, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			header := tc.header
			if header == nil {
				header = http.Header{}
			}
			got, fnErr, err := classify(tc.status, header, []byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if fnErr != tc.wantFnErr {
				t.Errorf("functionErr %v, want %v", fnErr, tc.wantFnErr)
			}
			if fnErr && !json.Valid(got) {
				t.Errorf("function error result %q is not JSON", got)
			}
			if tc.wantTimeout && !strings.Contains(string(got), "Sandbox.Timedout") {
				t.Errorf("timeout result %s, want errorType Sandbox.Timedout", got)
			}
		})
	}
}
