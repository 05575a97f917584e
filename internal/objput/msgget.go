package objput

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// storedMsg is a message of a bucket's stream, as $JS.API.STREAM.MSG.GET
// answers it.
type storedMsg struct {
	Seq  uint64 `json:"seq"`
	Data []byte `json:"data"`
}

// msgGet asks the bucket stream's leader for one message with
// $JS.API.STREAM.MSG.GET: the last on a subject (last), or the first at
// or after seq on one (next). Not DIRECT.GET, on purpose: a direct get's
// answer is the stored message itself, headers and all, published to
// whatever reply subject the asker names, so whoever may direct-get a
// stream it writes can publish anything anywhere in the account, under
// the server's name; MSG.GET answers with a JSON envelope. Returns
// jetstream.ErrMsgNotFound when there is none.
func msgGet(ctx context.Context, nc *nats.Conn, stream string, req map[string]any) (*storedMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *storedMsg `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("%s answered what does not decode: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("%s: %s (%d)", stream, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return nil, fmt.Errorf("%s answered no message", stream)
	}
	return resp.Message, nil
}

// objectInfo reads the info of object name in bucket: nil when there is
// none. Links and deleted objects are returned as they are.
func objectInfo(ctx context.Context, nc *nats.Conn, bucket, name string) (*jetstream.ObjectInfo, error) {
	m, err := msgGet(ctx, nc, "OBJ_"+bucket, map[string]any{"last_by_subj": metaSubject(bucket, name)})
	if err == jetstream.ErrMsgNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the info of %s/%s: %w", bucket, name, err)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, fmt.Errorf("the info of %s/%s does not decode: %w", bucket, name, err)
	}
	return &info, nil
}

// validNUID reports whether id can be a subject token: an info written by
// whoever may write the bucket could name "*" or ">" and so every chunk.
func validNUID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "*>. \t\r\n")
}
