package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// ValidateComposePath loads a compose file ("-": stdin, relative to the
// working directory) with compose-go, which validates it against the
// Compose specification's JSON Schema and resolves anchors, merges,
// interpolation and references, then checks what the loader leaves to
// `docker compose up` to find out: build contexts, Dockerfiles and their
// targets, and bind-mounted files exist.
func ValidateComposePath(ctx context.Context, path string) []string {
	var probs problems
	var data []byte
	var err error
	workDir, _ := os.Getwd()
	name := path
	filename := filepath.Join(workDir, "compose.yaml")
	if path == "-" {
		name = "stdin"
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
		if abs, aerr := filepath.Abs(path); aerr == nil {
			workDir, filename = filepath.Dir(abs), abs
		}
	}
	if err != nil {
		return []string{name + ": " + err.Error()}
	}
	details := types.ConfigDetails{
		WorkingDir:  workDir,
		ConfigFiles: []types.ConfigFile{{Filename: filename, Content: data}},
		Environment: types.Mapping{},
	}
	project, err := loader.LoadWithContext(ctx, details, func(o *loader.Options) {
		o.SetProjectName("validate", true)
		o.ResolvePaths = true
	})
	if err != nil {
		return []string{name + ": rejected by compose-go: " + oneLine(err)}
	}
	if len(project.Services) == 0 {
		probs.add(name, "defines no services")
	}
	for sname, s := range project.Services {
		where := fmt.Sprintf("%s: service %s", name, sname)
		if s.Image == "" && s.Build == nil {
			probs.add(where, "has neither image nor build")
		}
		if b := s.Build; b != nil {
			if st, err := os.Stat(b.Context); err != nil || !st.IsDir() {
				probs.add(where, "build context %s is not a folder", b.Context)
				continue
			}
			dockerfile := b.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(b.Context, dockerfile)
			}
			df, err := os.ReadFile(dockerfile)
			if err != nil {
				probs.add(where, "Dockerfile: %v", err)
				continue
			}
			if b.Target != "" && !dockerfileHasStage(string(df), b.Target) {
				probs.add(where, "build target %q is not a stage of %s", b.Target, dockerfile)
			}
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					probs.add(where, "bind mount source %s does not exist", v.Source)
				}
			}
		}
	}
	return probs
}

var fromAs = regexp.MustCompile(`(?im)^\s*FROM\s+\S+\s+AS\s+(\S+)\s*$`)

func dockerfileHasStage(dockerfile, stage string) bool {
	for _, m := range fromAs.FindAllStringSubmatch(dockerfile, -1) {
		if strings.EqualFold(m[1], stage) {
			return true
		}
	}
	return false
}
