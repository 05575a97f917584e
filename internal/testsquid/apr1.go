package testsquid

import (
	"crypto/md5"
	"crypto/rand"
	"strings"
)

// itoa64 is the alphabet of crypt(3) hashes.
const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// APR1 returns the Apache MD5-crypt hash ("$apr1$salt$hash", what
// `openssl passwd -apr1` and `htpasswd -m` write) of password with salt
// (at most 8 characters of itoa64; longer is cut). Squid's basic_ncsa_auth
// accepts it in a password file. An empty salt gets a random one.
func APR1(password, salt string) string {
	if salt == "" {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		var s strings.Builder
		for _, c := range b {
			s.WriteByte(itoa64[int(c)%len(itoa64)])
		}
		salt = s.String()
	}
	if len(salt) > 8 {
		salt = salt[:8]
	}
	const magic = "$apr1$"
	pw := []byte(password)

	alt := md5.New()
	alt.Write(pw)
	alt.Write([]byte(salt))
	alt.Write(pw)
	altSum := alt.Sum(nil)

	ctx := md5.New()
	ctx.Write(pw)
	ctx.Write([]byte(magic))
	ctx.Write([]byte(salt))
	for i := len(pw); i > 0; i -= 16 {
		ctx.Write(altSum[:min(i, 16)])
	}
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			ctx.Write([]byte{0})
		} else {
			ctx.Write(pw[:1])
		}
	}
	final := ctx.Sum(nil)
	for i := 0; i < 1000; i++ {
		c := md5.New()
		if i&1 != 0 {
			c.Write(pw)
		} else {
			c.Write(final)
		}
		if i%3 != 0 {
			c.Write([]byte(salt))
		}
		if i%7 != 0 {
			c.Write(pw)
		}
		if i&1 != 0 {
			c.Write(final)
		} else {
			c.Write(pw)
		}
		final = c.Sum(nil)
	}

	var out strings.Builder
	out.WriteString(magic + salt + "$")
	to64 := func(v uint32, n int) {
		for ; n > 0; n-- {
			out.WriteByte(itoa64[v&0x3f])
			v >>= 6
		}
	}
	for _, g := range [][3]int{{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10, 5}} {
		to64(uint32(final[g[0]])<<16|uint32(final[g[1]])<<8|uint32(final[g[2]]), 4)
	}
	to64(uint32(final[11]), 2)
	return out.String()
}
