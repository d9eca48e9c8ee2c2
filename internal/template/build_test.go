package template_test

import (
	"bytes"
	"context"
	"debug/elf"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSAMBuild does what `sam build` does for a BuildMethod: makefile function — runs
// `make build-<LogicalId> ARTIFACTS_DIR=<dir>` in the repository root — for every function of
// the template, and checks the result is a bootstrap Lambda's provided.al2023 arm64 runtime can
// execute: a static 64-bit little-endian Linux executable for AArch64.
func TestSAMBuild(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed for sam build's makefile method: %v", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tpl := loadTemplate(t)
	fns := tpl.Functions()
	if len(fns) == 0 {
		t.Fatal("no functions in the template")
	}
	for _, f := range fns {
		t.Run(f.LogicalID, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "build-"+f.LogicalID, "ARTIFACTS_DIR="+dir)
			cmd.Dir = root
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("make build-%s: %v\n%s", f.LogicalID, err, out.Bytes())
			}
			checkLambdaBinary(t, filepath.Join(dir, "bootstrap"))
		})
	}
}

func checkLambdaBinary(t *testing.T, path string) {
	t.Helper()
	bin, err := elf.Open(path)
	if err != nil {
		t.Fatalf("bootstrap is not an ELF file: %v", err)
	}
	defer bin.Close()
	if bin.Machine != elf.EM_AARCH64 {
		t.Errorf("machine %s, want %s (Architectures: arm64)", bin.Machine, elf.EM_AARCH64)
	}
	if bin.Class != elf.ELFCLASS64 || bin.Data != elf.ELFDATA2LSB {
		t.Errorf("class %s, data %s; want ELFCLASS64, ELFDATA2LSB", bin.Class, bin.Data)
	}
	if bin.Type != elf.ET_EXEC {
		t.Errorf("type %s, want %s", bin.Type, elf.ET_EXEC)
	}
	if bin.OSABI != elf.ELFOSABI_NONE && bin.OSABI != elf.ELFOSABI_LINUX {
		t.Errorf("OS ABI %s, want Linux (or the System V default)", bin.OSABI)
	}
	// CGO_ENABLED=0: no dynamic loader, so nothing depends on the runtime image's libc.
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("dynamically linked (has an interpreter); want a static binary")
		}
	}
	if info, err := exec.LookPath(path); err != nil {
		t.Errorf("bootstrap is not executable: %v (%v)", err, info)
	}
}
