// Package coldstart measures each function's cold start (`make bench-cold`, issue 12): it
// builds every function of template.yaml and an aws-lambda-go hello world the same way, starts
// each in a fresh emulator process, alternating, several rounds, and prints per function the
// median init duration (the emulator's REPORT line, as Lambda reports it), the time to the first
// answer, the peak resident memory of the bootstrap and the size of its linux/arm64 build.
//
// It is a developer tool of the CLI: it may import the emulator runner (rie), the template
// reader and the standard library, nothing of the product.
package coldstart

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/rie"
	"github.com/keywarden/keywarden/internal/template"
)

// HelloWorld names the yardstick in the table.
const HelloWorld = "hello-world"

// DefaultRounds is how many fresh processes per function make bench-cold starts: more than the
// minimum of 9, since a run of 21 rounds takes seconds and its medians move less between runs.
const DefaultRounds = 21

// Options say what to measure.
type Options struct {
	// Dir is the repository root (go.mod, template.yaml, functions/).
	Dir string
	// Rounds is how many fresh processes per function; the median is reported. At least 9.
	Rounds int
	// Env is the go command's environment.
	Env []string
}

// Result is one function's figures: medians over the rounds.
type Result struct {
	Name string
	Init time.Duration
	// SDKFloorRatio is InitRatio for a bootstrap that builds this function's AWS service
	// clients (Services) and nothing else: the part of the init keywarden cannot shed without
	// leaving the SDK. Zero for hello-world.
	SDKFloorRatio float64
	Services      []string
	// InitRatio is the median, over the rounds, of this function's init divided by the init of
	// the hello-world started just before it: a ratio taken side by side, so a slow stretch of
	// the machine, which lands on both, cancels out instead of moving one median only.
	InitRatio   float64
	FirstAnswer time.Duration
	// ColdAnswer is the time from starting the emulator process to the first answer: init,
	// the first invocation and the emulator's own start, as a caller of a cold function waits.
	ColdAnswer time.Duration
	// PeakRSS is the bootstrap's VmHWM after its first answer, in bytes.
	PeakRSS int64
	// Size is the linux/arm64 bootstrap's size in bytes.
	Size int64
}

// target is one bootstrap to measure.
type target struct {
	name     string
	services []string  // the SDK service packages a floor builds
	ratios   []float64 // each init over the hello-world's started just before it
	pkg      string    // ./functions/x
	host     string    // bootstrap built for this machine
	arm64    string    // bootstrap built for Lambda
	inits    []time.Duration
	firsts   []time.Duration
	colds    []time.Duration
	rss      []int64
}

// Run builds, measures and writes the table to out. The last line is
// "cold start: worst init N.NNx hello-world".
func Run(ctx context.Context, o Options, out io.Writer) ([]Result, error) {
	if o.Rounds < 9 {
		o.Rounds = 9
	}
	tpl, err := template.Load(filepath.Join(o.Dir, "template.yaml"))
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "keywarden-bench-cold-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	targets := []*target{{name: HelloWorld, pkg: "./cmd/keywarden/internal/coldstart/hello"}}
	for _, f := range tpl.Functions() {
		targets = append(targets, &target{name: f.LogicalID, pkg: "./" + strings.TrimSuffix(f.CodeURI, "/")})
	}
	// Each function's SDK floor: a bootstrap that builds the same AWS service clients and
	// nothing else, so the table shows how much of the init the AWS SDK's own packages take.
	floorDir, err := os.MkdirTemp(o.Dir, ".bench-cold-floor-") // a dot: ./... never sees it
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(floorDir)
	floors := map[string]*target{}
	for _, t := range targets[1:] {
		ft, err := floor(ctx, o, t, floorDir)
		if err != nil {
			return nil, err
		}
		floors[t.name] = ft
		targets = append(targets, ft)
	}
	fmt.Fprintf(out, "building %d bootstraps for %s/%s and linux/arm64 …\n", len(targets), "linux", runtime.GOARCH)
	for _, t := range targets {
		t.host = filepath.Join(work, "host", t.name, "bootstrap")
		t.arm64 = filepath.Join(work, "arm64", t.name, "bootstrap")
		if err := build(ctx, o, t.pkg, t.host, runtime.GOARCH); err != nil {
			return nil, err
		}
		if err := build(ctx, o, t.pkg, t.arm64, "arm64"); err != nil {
			return nil, err
		}
	}
	// The functions run with template.yaml's Globals environment where it tunes the runtime.
	env := maps.Clone(baseEnv)
	if gogc, ok := globalEnv(tpl)["GOGC"].(string); ok {
		env["GOGC"] = gogc
		fmt.Fprintf(out, "GOGC=%s for the functions, as template.yaml sets it\n", gogc)
	}
	emulator, err := rie.Locate(ctx, o.Dir, o.Env)
	if err != nil {
		return nil, err
	}
	// Alternate: each round starts every bootstrap once, in an order rotated by the round, each
	// right after a hello-world of its own, so a slow moment of the machine lands on the pair
	// and cancels out of their ratio instead of landing on one function only.
	hello := targets[0]
	sample := func(t *target, env map[string]string) (time.Duration, error) {
		m, err := measure(ctx, emulator, t.host, env)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t.name, err)
		}
		t.inits, t.firsts, t.colds, t.rss = append(t.inits, m.init), append(t.firsts, m.first), append(t.colds, m.cold), append(t.rss, m.rss)
		return m.init, nil
	}
	others := targets[1:]
	for round := range o.Rounds {
		for i := range others {
			t := others[(i+round)%len(others)]
			h, err := sample(hello, baseEnv) // the yardstick as aws-lambda-go builds it, untuned
			if err != nil {
				return nil, err
			}
			f, err := sample(t, env)
			if err != nil {
				return nil, err
			}
			t.ratios = append(t.ratios, float64(f)/float64(h))
		}
	}

	var results []Result
	for _, t := range targets {
		if strings.HasPrefix(t.name, floorPrefix) {
			continue
		}
		st, err := os.Stat(t.arm64)
		if err != nil {
			return nil, err
		}
		ratio := 1.0
		if t != hello {
			ratio = median(t.ratios)
		}
		r := Result{Name: t.name, Init: median(t.inits), InitRatio: ratio, FirstAnswer: median(t.firsts), ColdAnswer: median(t.colds), PeakRSS: median(t.rss), Size: st.Size()}
		if ft := floors[t.name]; ft != nil {
			r.SDKFloorRatio, r.Services = median(ft.ratios), ft.services
		}
		results = append(results, r)
	}
	print(out, results, o.Rounds)
	return results, nil
}

func print(out io.Writer, rs []Result, rounds int) {
	hello := rs[0]
	fmt.Fprintf(out, "median of %d fresh processes each, under the Lambda Runtime Interface Emulator on %s\n", rounds, runtime.GOARCH)
	fmt.Fprintf(out, "(INIT ×HELLO is the median of each init over that of a hello-world started just before it)\n")
	fmt.Fprintf(out, "(SDK FLOOR is the same ratio for a bootstrap that builds only the function's AWS clients)\n")
	fmt.Fprintf(out, "%-20s %9s %7s %9s %13s %12s %7s %10s %11s\n", "FUNCTION", "INIT", "×HELLO", "SDK FLOOR", "FIRST ANSWER", "COLD ANSWER", "×HELLO", "PEAK RSS", "ARM64 SIZE")
	worst := 0.0
	for _, r := range rs {
		ratio := r.InitRatio
		if r.Name != HelloWorld {
			worst = max(worst, ratio)
		}
		floor := "-"
		if r.SDKFloorRatio > 0 {
			floor = fmt.Sprintf("%.2fx", r.SDKFloorRatio)
		}
		fmt.Fprintf(out, "%-20s %9s %6.2fx %9s %13s %12s %6.2fx %7.1f MB %8.1f MB\n", r.Name, ms(r.Init), ratio, floor, ms(r.FirstAnswer),
			ms(r.ColdAnswer), float64(r.ColdAnswer)/float64(hello.ColdAnswer), float64(r.PeakRSS)/(1<<20), float64(r.Size)/(1<<20))
	}
	fmt.Fprintf(out, "cold start: worst init %.2fx hello-world\n", worst)
}

// floorPrefix names the SDK-floor bootstraps, which are measured but printed as a column.
const floorPrefix = "sdk-floor-"

// servicePackage matches an AWS SDK service client package (not its types or internals).
var servicePackage = regexp.MustCompile(`^github\.com/aws/aws-sdk-go-v2/service/([a-z0-9]+)$`)

// floor writes and returns the SDK-floor target of t under dir: a main that builds, from one
// aws.Config, a client of every AWS SDK service package t links (go list -deps), and starts
// aws-lambda-go like hello-world.
func floor(ctx context.Context, o Options, t *target, dir string) (*target, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-tags", "lambda.norpc", "-f", "{{.ImportPath}}", t.pkg)
	cmd.Dir = o.Dir
	cmd.Env = append(slices.Clone(o.Env), "GOOS=linux", "CGO_ENABLED=0")
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %w", t.pkg, err)
	}
	var services []string
	for line := range strings.Lines(string(b)) {
		if m := servicePackage.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			services = append(services, m[1])
		}
	}
	slices.Sort(services)
	var src strings.Builder
	src.WriteString("package main\n\nimport (\n\t\"github.com/aws/aws-lambda-go/lambda\"\n\t\"github.com/aws/aws-sdk-go-v2/aws\"\n")
	for _, s := range services {
		fmt.Fprintf(&src, "\t\"github.com/aws/aws-sdk-go-v2/service/%s\"\n", s)
	}
	src.WriteString(")\n\nvar clients []any\n\nfunc main() {\n\tcfg := aws.Config{Region: \"us-east-1\"}\n")
	for _, s := range services {
		fmt.Fprintf(&src, "\tclients = append(clients, %s.NewFromConfig(cfg))\n", s)
	}
	src.WriteString("\tlambda.Start(func() (string, error) { return \"floor\", nil })\n}\n")
	name := floorPrefix + t.name
	pkgDir := filepath.Join(dir, name)
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(pkgDir, "main.go"), []byte(src.String()), 0o644); err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(o.Dir, pkgDir)
	if err != nil {
		return nil, err
	}
	return &target{name: name, pkg: "./" + rel, services: services}, nil
}

// globalEnv is template.yaml's Globals.Function.Environment.Variables.
func globalEnv(tpl *template.Template) map[string]any {
	fn, _ := tpl.Globals["Function"].(map[string]any)
	e, _ := fn["Environment"].(map[string]any)
	v, _ := e["Variables"].(map[string]any)
	return v
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// build compiles pkg as Lambda's build does (Makefile LAMBDA_FLAGS) for linux/arch.
func build(ctx context.Context, o Options, pkg, out, arch string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = o.Dir
	cmd.Env = append(slices.Clone(o.Env), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", pkg, arch, err, b)
	}
	return nil
}

// env lets every function's init succeed offline: every setting a function requires, secrets
// given directly (no Secrets Manager call), AWS pointed at a closed loopback port so a handler
// that calls AWS fails at once instead of waiting on a network.
var baseEnv = map[string]string{
	"AWS_LAMBDA_FUNCTION_TIMEOUT":     "30",
	"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
	"AWS_LAMBDA_FUNCTION_NAME":        "bench",
	"AWS_REGION":                      "us-east-1",
	"AWS_ACCESS_KEY_ID":               "test",
	"AWS_SECRET_ACCESS_KEY":           "test",
	"AWS_ENDPOINT_URL":                "http://127.0.0.1:1",
	"AWS_MAX_ATTEMPTS":                "1",
	"INCIDENTS_TABLE":                 "bench",
	"LOG_LEVEL":                       "error",
	"SLACK_BOT_TOKEN":                 "xoxb-bench",
	"SLACK_API_URL":                   "http://127.0.0.1:1/api/",
	"SLACK_CHANNEL":                   "C0BENCH01",
	"SLACK_SIGNING_SECRET":            "bench",
	"APPROVERS":                       "U0BENCH01",
	// Named, so SlackActionFunction does not ask auth.test for its workspace at start.
	"SLACK_TEAM_ID":      "T0BENCH01",
	"REMEDIATE_FUNCTION": "RemediateFunction",
}

// initDuration is the emulator's own account of the init phase: from starting the bootstrap to
// its first request for an event — what Lambda bills as Init Duration. (The emulator's REPORT
// line also has an "Init Duration", but observed with aws-lambda-rie v0.0.0-20261030222936 it
// reads a few hundredths of a millisecond whatever the function does; the INIT REPORT line is
// the one that measures.)
var initDuration = regexp.MustCompile(`INIT REPORT\(durationMs: ([0-9.]+)\)`)

// sample is one cold start.
type sample struct {
	init, first, cold time.Duration
	rss               int64
}

// measure starts one fresh emulator with bootstrap, sends `{}` and returns the init duration
// the emulator reports, the time to the answer (from sending the event, and from starting the
// emulator) and the bootstrap's peak RSS.
func measure(ctx context.Context, emulator, bootstrap string, env map[string]string) (sample, error) {
	var log syncBuffer
	launched := time.Now()
	em, err := rie.Start(ctx, emulator, bootstrap, env, time.Minute, &log)
	if err != nil {
		return sample{}, err
	}
	defer em.Stop()
	start := time.Now()
	if _, _, err := em.Invoke(ctx, []byte(`{}`), time.Minute); err != nil {
		return sample{}, err
	}
	s := sample{first: time.Since(start), cold: time.Since(launched)}
	if s.rss = peakRSS(em.Pgid(), "bootstrap"); s.rss == 0 {
		return sample{}, fmt.Errorf("the bootstrap's memory could not be read in /proc (did its init fail? emulator log:\n%s)", log.Bytes())
	}
	// The REPORT line follows the answer by a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if m := initDuration.FindSubmatch(log.Bytes()); m != nil {
			f, _ := strconv.ParseFloat(string(m[1]), 64)
			s.init = time.Duration(f * float64(time.Millisecond))
			return s, nil
		}
		if time.Now().After(deadline) {
			return sample{}, fmt.Errorf("no INIT REPORT in the emulator's log:\n%s", log.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// peakRSS is the VmHWM, in bytes, of the process named comm that a process of group pgid
// started (Linux /proc), or 0 when it cannot be read. The emulator starts the bootstrap in a
// process group of its own, so it is found by its parent.
func peakRSS(pgid int, comm string) int64 {
	type proc struct {
		dir, comm  string
		ppid, pgrp string
	}
	var procs []proc
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …: comm may hold spaces, so split after its ')'.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		fields := strings.Fields(s[end+1:])
		if open < 0 || end < 0 || len(fields) < 3 {
			continue
		}
		procs = append(procs, proc{dir: d, comm: s[open+1 : end], ppid: fields[1], pgrp: fields[2]})
	}
	inGroup := map[string]bool{}
	for _, p := range procs {
		if p.pgrp == strconv.Itoa(pgid) {
			inGroup[filepath.Base(p.dir)] = true
		}
	}
	for _, p := range procs {
		if p.comm != comm || !inGroup[p.ppid] {
			continue
		}
		status, err := os.ReadFile(filepath.Join(p.dir, "status"))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func median[T time.Duration | int64 | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// syncBuffer is a bytes.Buffer the emulator's output goroutines and the reader share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.b.Bytes())
}
