package secrets_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// testProvider records how it was started.
type testProvider struct {
	section string
	started *[]string
	fail    bool
}

func (p testProvider) Section() string   { return p.section }
func (p testProvider) Schemes() []string { return []string{secrets.SchemeCyberArk} }
func (p testProvider) Missing() string   { return "the test provider's section" }
func (p testProvider) Start(_ context.Context, section *yaml.Node, needed bool, _ *secrets.Sources, _ zerolog.Logger) (func(), error) {
	if p.fail {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "bad settings")
	}
	if section == nil && !needed {
		return nil, nil
	}
	*p.started = append(*p.started, p.section)
	return func() { *p.started = append(*p.started, "stopped "+p.section) }, nil
}

func TestStartProviders(t *testing.T) {
	var section yaml.Node
	if err := yaml.Unmarshal([]byte("url: https://x\n"), &section); err != nil {
		t.Fatal(err)
	}
	sections := map[string]yaml.Node{"mine": *section.Content[0]}
	ctx := context.Background()
	var log zerolog.Logger

	var started []string
	sources := secrets.DefaultSources("")
	stop, err := secrets.StartProviders(ctx, []secrets.Provider{testProvider{section: "mine", started: &started}, testProvider{section: "idle", started: &started}},
		sections, nil, sources, log)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if strings.Join(started, ",") != "mine,stopped mine" {
		t.Errorf("started and stopped %v; want the provider with a section only", started)
	}
	// A scheme no source reads says what the provider wants.
	ref, _ := secrets.ParseRef("cyberark:Safe/obj")
	if err := sources.Check(ref); err == nil || !strings.Contains(err.Error(), "the test provider's section") {
		t.Errorf("Check = %v; want the provider's Missing text", err)
	}

	// A profile that references the provider's scheme starts it without a section.
	started = nil
	profiles := map[string]secrets.Profile{"p": {Keystore: "cyberark:Safe/ks#Content"}}
	stop, err = secrets.StartProviders(ctx, []secrets.Provider{testProvider{section: "mine", started: &started}}, nil, profiles, secrets.DefaultSources(""), log)
	if err != nil || len(started) != 1 {
		t.Fatalf("err %v, started %v; want the needed provider started", err, started)
	}
	stop()

	// A section no provider claims is refused, naming it.
	_, err = secrets.StartProviders(ctx, []secrets.Provider{testProvider{section: "vault", started: &started}},
		map[string]yaml.Node{"vualt": *section.Content[0]}, nil, secrets.DefaultSources(""), log)
	if err == nil || !strings.Contains(err.Error(), `"vualt"`) {
		t.Errorf("err = %v; want the unknown section named", err)
	}

	// A provider that fails stops those started before it.
	started = nil
	_, err = secrets.StartProviders(ctx, []secrets.Provider{testProvider{section: "mine", started: &started}, testProvider{section: "bad", fail: true}},
		map[string]yaml.Node{"mine": *section.Content[0], "bad": *section.Content[0]}, nil, secrets.DefaultSources(""), log)
	if err == nil || err.Error() != "bad: bad settings" || strings.Join(started, ",") != "mine,stopped mine" {
		t.Errorf("err %v, started %v; want the failure named by section, without a wire code, and the first provider stopped", err, started)
	}
	var se *secrets.SectionError
	if !errors.As(err, &se) || jobs.CodeOf(err) != jobs.CodeKeystoreInvalid {
		t.Errorf("err %#v; want a *SectionError that still unwraps to the provider's error", err)
	}
}
