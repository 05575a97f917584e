package pubwindow

import "time"

// SetRoomWait makes w's publishes wait at most d for room, apart from its
// ack timeout.
func SetRoomWait(w *Window, d time.Duration) { w.roomWait = d }
