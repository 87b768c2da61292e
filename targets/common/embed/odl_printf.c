/* printf to the UART for the embedded library's users (no libc on the target): %d %i %u %x %X %c %s %f %%, the
 * length modifier l (long = 32 bits here), flags '-' and '0', a width and a .precision (%f: 6 digits by default).
 * %f prints the value rounded half up at the requested digits; values beyond 2^32 print in 'e' style. */
#include <stdarg.h>
#include <stdint.h>
#include "platform.h"

typedef struct { int left, zero, width, prec; } spec_t;

static int pad(int n, char c) {
  for (int i = 0; i < n; i++) uart_putc((uint8_t)c);
  return n > 0 ? n : 0;
}

static int emit(const char *s, int len, const spec_t *sp, int numeric) {
  int n = 0, fill = sp->width - len;
  if (!sp->left && sp->zero && numeric && (s[0] == '-') && fill > 0) { uart_putc('-'); s++; len--; n++; }
  if (!sp->left) n += pad(fill, sp->zero && numeric ? '0' : ' ');
  for (int i = 0; i < len; i++) uart_putc((uint8_t)s[i]);
  n += len;
  if (sp->left) n += pad(fill, ' ');
  return n;
}

static int utoa(uint32_t v, unsigned base, int upper, char *out) {
  char tmp[12];
  int n = 0;
  const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do { tmp[n++] = dig[v % base]; v /= base; } while (v);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

static int ftoa(double v, int prec, char *out) {
  int n = 0;
  if (v != v) { out[0] = 'n'; out[1] = 'a'; out[2] = 'n'; return 3; }
  if (v < 0) { out[n++] = '-'; v = -v; }
  if (v > 4.0e9) {
    if (v - v != 0) { out[n++] = 'i'; out[n++] = 'n'; out[n++] = 'f'; return n; }
    int e = 0;
    while (v >= 10.0) { v /= 10.0; e++; }
    n += ftoa(v, prec, out + n);
    out[n++] = 'e';
    out[n++] = '+';
    return n + utoa((uint32_t)e, 10, 0, out + n);
  }
  if (prec > 9) prec = 9;
  double r = 0.5;
  for (int i = 0; i < prec; i++) r /= 10.0;
  v += r;
  uint32_t ip = (uint32_t)v;
  n += utoa(ip, 10, 0, out + n);
  if (prec > 0) {
    out[n++] = '.';
    double f = v - (double)ip;
    for (int i = 0; i < prec; i++) {
      f *= 10.0;
      int d = (int)f;
      out[n++] = (char)('0' + d);
      f -= d;
    }
  }
  return n;
}

int printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int total = 0;
  char num[48];
  for (const char *p = fmt; *p; p++) {
    if (*p != '%') { uart_putc((uint8_t)*p); total++; continue; }
    spec_t sp = {0, 0, 0, -1};
    p++;
    for (;; p++) {
      if (*p == '-') sp.left = 1;
      else if (*p == '0') sp.zero = 1;
      else break;
    }
    while (*p >= '0' && *p <= '9') sp.width = sp.width * 10 + (*p++ - '0');
    if (*p == '.') {
      sp.prec = 0;
      p++;
      while (*p >= '0' && *p <= '9') sp.prec = sp.prec * 10 + (*p++ - '0');
    }
    while (*p == 'l' || *p == 'z') p++;
    int n;
    switch (*p) {
      case 'd': case 'i': {
        int32_t v = va_arg(ap, int32_t);
        n = 0;
        if (v < 0) num[n++] = '-';
        n += utoa(v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v, 10, 0, num + n);
        total += emit(num, n, &sp, 1);
        break;
      }
      case 'u': n = utoa(va_arg(ap, uint32_t), 10, 0, num); total += emit(num, n, &sp, 1); break;
      case 'x': n = utoa(va_arg(ap, uint32_t), 16, 0, num); total += emit(num, n, &sp, 1); break;
      case 'X': n = utoa(va_arg(ap, uint32_t), 16, 1, num); total += emit(num, n, &sp, 1); break;
      case 'c': num[0] = (char)va_arg(ap, int); total += emit(num, 1, &sp, 0); break;
      case 'f': case 'F': case 'g':
        n = ftoa(va_arg(ap, double), sp.prec < 0 ? 6 : sp.prec, num);
        total += emit(num, n, &sp, 1);
        break;
      case 's': {
        const char *s = va_arg(ap, const char *);
        if (!s) s = "(null)";
        int len = 0;
        while (s[len] && (sp.prec < 0 || len < sp.prec)) len++;
        total += emit(s, len, &sp, 0);
        break;
      }
      case '%': uart_putc('%'); total++; break;
      case 0: p--; break;
      default: uart_putc('%'); uart_putc((uint8_t)*p); total += 2; break;
    }
  }
  va_end(ap);
  return total;
}
