package stack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/rie"
)

// builder compiles for this machine what the stack runs: each function's bootstrap for the
// emulator, the keywarden command for the background services, and the emulator itself.
type builder struct {
	dir      string // the repository root
	stateDir string // builds go under it

	// mu serialises builds, so two concurrent invocations of one function do not write the
	// same bootstrap at once.
	mu       sync.Mutex
	rieBuilt bool
}

// function compiles the function logicalID, whose source is folder, for this machine — the host's GOOS and GOARCH, unlike
// the arm64 Linux build SAM deploys — with -tags lambda.norpc as in production, and returns
// the path of its bootstrap. The go command's build cache makes an unchanged function cost a
// check of well under a second when the bootstrap is already in place (the go command then
// neither compiles nor links), so there is no cache of its own here.
func (b *builder) function(ctx context.Context, logicalID, folder string) (string, error) {
	out := filepath.Join(b.stateDir, "build", logicalID, "bootstrap")
	if err := b.goBuild(ctx, out, "./"+filepath.ToSlash(folder), "-tags", "lambda.norpc"); err != nil {
		return "", fmt.Errorf("build %s: %w", logicalID, err)
	}
	return out, nil
}

// emulator makes .local/bin/aws-lambda-rie the emulator go.mod pins, once per builder: a symlink
// to the binary rie.Locate leaves in the Go build cache, so the emulator is linked once per
// version, not once per state folder.
func (b *builder) emulator(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := filepath.Join(b.stateDir, "bin", "aws-lambda-rie")
	if b.rieBuilt {
		return out, nil
	}
	cached, err := rie.Locate(ctx, b.dir, hostBuildEnv())
	if err != nil {
		return "", err
	}
	if current, err := os.Readlink(out); err != nil || current != cached {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		// Replace by rename, so a concurrent invocation never finds no emulator.
		tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
		_ = os.Remove(tmp)
		if err := os.Symlink(cached, tmp); err != nil {
			return "", fmt.Errorf("link the emulator: %w", err)
		}
		if err := os.Rename(tmp, out); err != nil {
			return "", fmt.Errorf("link the emulator: %w", err)
		}
	}
	b.rieBuilt = true
	return out, nil
}

// hostBuildEnv is the environment of a build for this machine, whatever the caller exported
// for a Lambda build. CGO is off as in production, so the pure-Go resolver and friends behave
// as they will in Lambda.
func hostBuildEnv() []string {
	return append(os.Environ(), "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH, "CGO_ENABLED=0")
}

// cli builds the keywarden command for the background local services: `go run` (make
// local-up) and test binaries are not a keywarden that outlives them.
func (b *builder) cli(ctx context.Context) (string, error) {
	bin := filepath.Join(b.stateDir, "bin", "keywarden")
	if err := b.goBuild(ctx, bin, "./cmd/keywarden"); err != nil {
		return "", fmt.Errorf("build keywarden for the local services: %w", err)
	}
	return bin, nil
}

func (b *builder) goBuild(ctx context.Context, out, pkg string, flags ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = b.dir
	cmd.Env = hostBuildEnv()
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, output.Bytes())
	}
	return nil
}
