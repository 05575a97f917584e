package objput_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/objput"
)

// startBucket starts a real NATS server whose streams buffer at most
// bufferBytes of incoming messages (0: the server's default), and returns
// a connection and an Object Store bucket on it.
func startBucket(t *testing.T, bufferBytes int64) (*nats.Conn, jetstream.ObjectStore) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), StreamMaxBufferedSize: bufferBytes, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := js.CreateObjectStore(context.Background(), jetstream.ObjectStoreConfig{Bucket: "bodies", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	return nc, store
}

func newWriter(t *testing.T, nc *nats.Conn, o objput.Options) *objput.Writer {
	t.Helper()
	w, err := objput.New(nc, "bodies", o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readBack reads name with nats.go's own Object Store reader, which checks
// the chunk count, the size and the digest the info states.
func readBack(t *testing.T, store jetstream.ObjectStore, name string) []byte {
	t.Helper()
	got, err := store.GetBytes(context.Background(), name)
	if err != nil {
		t.Fatalf("nats.go reads %s: %v", name, err)
	}
	return got
}

// Objects written by a Writer are those nats.go writes: its reader takes
// them, with the same chunking, size and digest, at every size around a
// chunk's edges.
func TestPutReadByNATSClient(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024, Window: 3})
	ctx := context.Background()
	for _, n := range []int{0, 1, 1023, 1024, 1025, 3 * 1024, 100_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			body := randomBytes(n, uint64(n))
			name := fmt.Sprintf("results/x-%d", n)
			info, err := w.Put(ctx, jetstream.ObjectMeta{Name: name, Headers: nats.Header{"Content-Type": {"application/octet-stream"}}}, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != uint64(n) || int(info.Chunks) != (n+1023)/1024 {
				t.Errorf("info: size %d chunks %d; want %d and %d", info.Size, info.Chunks, n, (n+1023)/1024)
			}
			if got := readBack(t, store, name); !bytes.Equal(got, body) {
				t.Errorf("read back %d bytes, not the %d written", len(got), n)
			}
			// The same object written by nats.go: the stored infos agree.
			want, err := store.PutBytes(ctx, name+"-nats", body)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := store.GetInfo(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Digest != want.Digest || stored.Size != want.Size || stored.Headers.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("stored info %+v; nats.go's %+v", stored, want)
			}
		})
	}
}

// Replacing an object removes the chunks of the one it replaces.
func TestPutReplaces(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024})
	ctx := context.Background()
	if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: "o"}, bytes.NewReader(randomBytes(10_000, 1))); err != nil {
		t.Fatal(err)
	}
	second := randomBytes(5_000, 2)
	if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: "o"}, bytes.NewReader(second)); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, store, "o"); !bytes.Equal(got, second) {
		t.Errorf("read back the first object, or neither")
	}
	status, err := store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 5 chunks of the second object and its info: the first's 10 chunks are gone.
	if n := status.(*jetstream.ObjectBucketStatus).StreamInfo().State.Msgs; n != 6 {
		t.Errorf("the bucket's stream holds %d messages; want 6", n)
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// A reader that fails leaves no object and no chunks, keeps the previous
// object readable, and its error is told apart from the store's.
func TestPutReaderFails(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024})
	ctx := context.Background()
	prev := randomBytes(3000, 3)
	if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: "o"}, bytes.NewReader(prev)); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("partner reset the stream")
	_, err := w.Put(ctx, jetstream.ObjectMeta{Name: "o"}, &failingReader{r: bytes.NewReader(randomBytes(50_000, 4)), err: cause})
	var re *objput.ErrReader
	if !errors.As(err, &re) || !errors.Is(err, cause) {
		t.Fatalf("err = %v; want the reader's, as an ErrReader", err)
	}
	if got := readBack(t, store, "o"); !bytes.Equal(got, prev) {
		t.Errorf("the previous object is not what it was")
	}
	status, err := store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := status.(*jetstream.ObjectBucketStatus).StreamInfo().State.Msgs; n != 4 {
		t.Errorf("the bucket's stream holds %d messages; want the previous object's 3 chunks and info", n)
	}
}

// Many large objects written at once into a server whose stream ingest
// buffer is small all arrive: a Writer never has more unacknowledged bytes
// out than the buffer takes. (nats.go's Put, up to 4,000 chunks out per
// object, makes the server drop chunks and answer 429 here.)
func TestPutBoundedWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 96 MB")
	}
	const buffer = 4 << 20
	nc, store := startBucket(t, buffer)
	// At most 16 x 128 KiB = 2 MiB out at once, across all objects.
	w := newWriter(t, nc, objput.Options{Window: 8, Total: 16})
	ctx := context.Background()
	const objects, size = 8, 12 << 20
	var wg sync.WaitGroup
	errs := make([]error, objects)
	sums := make([][32]byte, objects)
	for i := range objects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := randomBytes(size, uint64(100+i))
			sums[i] = sha256.Sum256(body)
			_, errs[i] = w.Put(ctx, jetstream.ObjectMeta{Name: fmt.Sprint("big-", i)}, bytes.NewReader(body))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("object %d: %v", i, err)
			continue
		}
		if got := sha256.Sum256(readBack(t, store, fmt.Sprint("big-", i))); got != sums[i] {
			t.Errorf("object %d read back differs", i)
		}
	}
}

// A source cut short (net/http's io.ErrUnexpectedEOF for a body shorter
// than its Content-Length) fails the Put: it is not the end of the object.
func TestPutSourceCutShort(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024})
	_, err := w.Put(context.Background(), jetstream.ObjectMeta{Name: "cut"}, &failingReader{r: bytes.NewReader(randomBytes(5000, 5)), err: io.ErrUnexpectedEOF})
	var re *objput.ErrReader
	if !errors.As(err, &re) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v; want the source's io.ErrUnexpectedEOF, as an ErrReader", err)
	}
	if _, err := store.GetInfo(context.Background(), "cut"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("a truncated object was stored: %v", err)
	}
}

// stalledReader gives n bytes, then blocks until release is closed, then ends.
type stalledReader struct {
	n       int
	release chan struct{}
}

func (s *stalledReader) Read(p []byte) (int, error) {
	if s.n > 0 {
		k := min(len(p), s.n)
		s.n -= k
		return k, nil
	}
	<-s.release
	return 0, io.EOF
}

// Sources that stall hold none of the Writer's window once their chunks
// are stored: another object still gets written.
func TestPutStalledSourcesLeaveTheWindow(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024, Window: 8, Total: 16})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: fmt.Sprint("stalled-", i)}, &stalledReader{n: 8 * 1024, release: release}); err != nil {
				t.Errorf("stalled object %d: %v", i, err)
			}
		})
	}
	// Wait until both stalled objects have had their 8 chunks stored.
	for {
		status, err := store.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if status.(*jetstream.ObjectBucketStatus).StreamInfo().State.Msgs >= 16 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the stalled objects' chunks were not stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	body := randomBytes(20*1024, 6)
	if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: "beside"}, bytes.NewReader(body)); err != nil {
		t.Fatalf("an object beside two stalled ones: %v", err)
	}
	close(release)
	wg.Wait()
	if got := readBack(t, store, "beside"); !bytes.Equal(got, body) {
		t.Error("read back another object")
	}
}

type panickingReader struct{ n int }

func (p *panickingReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		panic("source defect")
	}
	k := min(len(b), p.n)
	p.n -= k
	return k, nil
}

// A source that panics gives the Writer's window back.
func TestPutPanickingSourceGivesTheWindowBack(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024, Window: 4, Total: 4})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		func() {
			defer func() { _ = recover() }()
			_, _ = w.Put(ctx, jetstream.ObjectMeta{Name: "panics"}, &panickingReader{n: 4 * 1024})
			t.Errorf("run %d: the source's panic did not reach the caller", i)
		}()
	}
	body := randomBytes(16*1024, 7)
	if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: "after"}, bytes.NewReader(body)); err != nil {
		t.Fatalf("after a panicking source: %v", err)
	}
	if got := readBack(t, store, "after"); !bytes.Equal(got, body) {
		t.Error("read back another object")
	}
}

// Open reads by direct gets what Put and nats.go wrote, and refuses links
// and objects whose chunks are not what the info says.
func TestOpen(t *testing.T) {
	nc, store := startBucket(t, 0)
	w := newWriter(t, nc, objput.Options{ChunkSize: 1024})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	read := func(name string) ([]byte, error) {
		r, _, err := objput.Open(ctx, nc, "bodies", name)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	for _, n := range []int{0, 1, 1024, 1025, 50_000} {
		body := randomBytes(n, uint64(1000+n))
		if _, err := w.Put(ctx, jetstream.ObjectMeta{Name: fmt.Sprint("mine-", n)}, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		if _, err := store.PutBytes(ctx, fmt.Sprint("nats-", n), body); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{fmt.Sprint("mine-", n), fmt.Sprint("nats-", n)} {
			if got, err := read(name); err != nil || !bytes.Equal(got, body) {
				t.Errorf("%s: %d bytes, %v; want the %d written", name, len(got), err, n)
			}
		}
	}
	if _, err := read("absent"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("absent: %v", err)
	}
	if _, err := store.AddLink(ctx, "link", &jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: "mine-1024"}, Bucket: "bodies"}); err != nil {
		t.Fatal(err)
	}
	if _, err := read("link"); err == nil || !strings.Contains(err.Error(), "link") {
		t.Errorf("a link was followed: %v", err)
	}
	// A chunk gone: the read fails, it does not end short.
	info, err := store.GetInfo(ctx, "mine-50000")
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "OBJ_bodies")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "$O.bodies.C."+info.NUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, m.Sequence); err != nil {
		t.Fatal(err)
	}
	if got, err := read("mine-50000"); err == nil {
		t.Errorf("an object missing its last chunk read as %d bytes", len(got))
	}
}
