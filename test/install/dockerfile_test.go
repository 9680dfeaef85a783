package install

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// No Docker engine runs here, so the Dockerfile is checked by reading it: pinned bases,
// a distroless non-root runtime, the `make build` command, and every package of the
// binary copied into the build context.
func TestDockerfileBuildsWhatMakeBuildDoes(t *testing.T) {
	root := filepath.Join("..", "..")
	read := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	dockerfile, makefile := read("Dockerfile"), read("Makefile")

	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(dockerfile, -1)
	if len(from) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %v", from)
	}
	for _, f := range from {
		if !regexp.MustCompile(`^[^:@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$`).MatchString(f[1]) {
			t.Errorf("base image %s is not pinned by tag and digest", f[1])
		}
	}
	if runtime := from[len(from)-1][1]; !strings.HasPrefix(runtime, "gcr.io/distroless/static") || !strings.Contains(runtime, ":nonroot@") {
		t.Errorf("the runtime image %s is not distroless static nonroot", runtime)
	}
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).MatchString(dockerfile) {
		t.Errorf("the image does not run as the distroless nonroot user 65532")
	}

	build := regexp.MustCompile(`(?m)^build:.*\n\t(.*)$`).FindStringSubmatch(makefile)
	if build == nil {
		t.Fatal("no build target in the Makefile")
	}
	want := strings.Replace(build[1], "$(LOCALBIN)/manager", "manager", 1)
	run := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=.*)$`).FindStringSubmatch(dockerfile)
	if run == nil {
		t.Fatal("the Dockerfile has no RUN CGO_ENABLED=... go build")
	}
	// The Dockerfile adds only the platform (GOOS/GOARCH) to the command.
	got := regexp.MustCompile(`\s+GOOS=\S+\s+GOARCH=\S+`).ReplaceAllString(run[1], "")
	if got != want {
		t.Errorf("the Dockerfile builds with %q, make build with %q", got, want)
	}

	var out bytes.Buffer
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", ".")
	cmd.Dir, cmd.Stdout = root, &out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(out.String()) {
		rel, err := filepath.Rel(abs, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency from the module cache: go mod download fetches it
		}
		top := strings.Split(rel, string(filepath.Separator))[0]
		if top == "." {
			top = "main.go"
		} else {
			top += "/"
		}
		if !strings.Contains(dockerfile, "COPY "+top+" ") {
			t.Errorf("the binary needs %s, which the Dockerfile does not copy", rel)
		}
	}
}
