package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// A worker authenticates with a credentials file (JWT + NKey seed) to a
// real server in operator mode, as NATS deployments with accounts do.
func TestNATSCredentialsFile(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operatorKP, err := nkeys.CreateOperator()
	must(err)
	operatorPub, _ := operatorKP.PublicKey()
	oc := jwt.NewOperatorClaims(operatorPub)
	oc.Name = "test-operator"
	operatorJWT, err := oc.Encode(operatorKP)
	must(err)
	operatorClaims, err := jwt.DecodeOperatorClaims(operatorJWT)
	must(err)

	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		tok, err := ac.Encode(operatorKP)
		must(err)
		return kp, pub, tok
	}
	_, sysPub, sysJWT := account("SYS", false)
	relayKP, relayPub, relayJWT := account("RELAY", true)

	resolver := &server.MemAccResolver{}
	must(resolver.Store(sysPub, sysJWT))
	must(resolver.Store(relayPub, relayJWT))
	s := startServerWith(t, &server.Options{
		TrustedOperators: []*jwt.OperatorClaims{operatorClaims},
		AccountResolver:  resolver,
		SystemAccount:    sysPub,
	})

	userKP, err := nkeys.CreateUser()
	must(err)
	userPub, _ := userKP.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "relay-worker"
	uc.IssuerAccount = relayPub
	userJWT, err := uc.Encode(relayKP)
	must(err)
	seed, _ := userKP.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	must(err)
	credsFile := filepath.Join(t.TempDir(), "worker.creds")
	must(os.WriteFile(credsFile, creds, 0o600))

	if nc, err := nats.Connect(s.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("server accepts clients without credentials; the test proves nothing")
	}
	p := startPartner(t)
	runWorkerConfig(t, s.ClientURL(), configYAML(t, authWorkerConfig,
		"NATSAUTH", `{creds_file: "`+credsFile+`"}`, "PARTNER", p.URL()))
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(credsFile))
	must(err)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if r := call(t, nc, js, "partner", map[string]any{"path": "echo"}); !r.OK {
		t.Fatalf("call through a worker using a creds file: %+v", r.Error)
	}
}
