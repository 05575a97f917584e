package bench

import "testing"

// The paced phases run at PacedRate when it is set, else at PacedFraction
// of the peak (one half by default), and the report says which.
func TestPacedRate(t *testing.T) {
	for _, tc := range []struct {
		o              Options
		rate, fraction float64
		how            string
	}{
		{Options{}, 2000, 0.5, "half the peak"},
		{Options{PacedFraction: 0.25}, 1000, 0.25, "a quarter of the peak"},
		{Options{PacedFraction: 0.1}, 400, 0.1, "10% of the peak"},
		{Options{PacedRate: 700}, 700, 0, "set by --paced-rate"},
	} {
		rate, fraction := tc.o.pacedRate(4000)
		if rate != tc.rate || fraction != tc.fraction || pacedHow(fraction) != tc.how {
			t.Errorf("%+v: rate %v, fraction %v (%q); want %v, %v (%q)", tc.o, rate, fraction, pacedHow(fraction), tc.rate, tc.fraction, tc.how)
		}
	}
}
