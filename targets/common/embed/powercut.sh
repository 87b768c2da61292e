#!/bin/sh
# Power-cut campaign of odl_store_save (make powercut). For each cut point k: a flash image holding Z and A (A
# newest), a boot that saves B and loses power at flash operation k (the HAL stops the machine: right after the
# operation, or -- every other point -- in the middle of it, the operation torn), then a boot that loads and checks
# the state by value: it must be A (old) or B (new). Cut points: every operation when a save has at most POINTS of
# them, else POINTS spread evenly over the save plus the last 8 (the slot header, programmed last).
#   QEMU=qemu-system-riscv32 QEMU_ARGS="..." sh embed/powercut.sh powercut.elf [POINTS]
set -eu
ELF=$1
POINTS=${2:-60}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/odl-powercut.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CUT=0x87FFFF00
boot() {  # boot IMAGE CUT MODE -> UART text on stdout; QEMU's exit status ignored (a cut ends with status 66)
  $QEMU $QEMU_ARGS -kernel "$ELF" -drive "if=pflash,unit=1,format=raw,file=$1" \
    -device "loader,addr=$CUT,data=$2,data-len=4" -device "loader,addr=$(printf '0x%x' $((CUT + 4))),data=$3,data-len=4" || true
}
head -c 33554432 /dev/zero | tr '\000' '\377' > "$WORK/base.img"
out=$(boot "$WORK/base.img" 0 1)
case "$out" in *prepared*) ;; *) echo "powercut: preparing the store failed: $out" >&2; exit 1;; esac
cp "$WORK/base.img" "$WORK/full.img"
out=$(boot "$WORK/full.img" 0 2)
ops=$(echo "$out" | sed -n 's/^save ODL_OK ops \([0-9]*\) .*/\1/p')
[ -n "$ops" ] || { echo "powercut: the uncut save failed: $out" >&2; exit 1; }
echo "powercut: one save = $ops flash operations ($(echo "$out" | sed -n 's/.* cycles \([0-9]*\) .*/\1/p') cycles)"
if [ "$ops" -le "$POINTS" ]; then
  pts=$(seq 1 "$ops")
else
  pts=$( (awk -v n="$ops" -v p="$POINTS" 'BEGIN { for (i = 0; i < p; i++) print 1 + int(i * (n - 1) / (p - 1)) }';
          seq $((ops > 8 ? ops - 7 : 1)) "$ops") | sort -n | uniq)
fi
n=0; old=0; new=0; lost=0
for k in $pts; do
  cp "$WORK/base.img" "$WORK/cut.img"
  if [ $((n % 2)) -eq 1 ]; then cut=$(printf '0x%x' $((k | 0x80000000))); how=torn; else cut=$k; how=after; fi
  boot "$WORK/cut.img" "$cut" 2 > /dev/null
  res=$(boot "$WORK/cut.img" 0 3)
  n=$((n + 1))
  case "$res" in
    *"recovered old"*) old=$((old + 1));;
    *"recovered new"*) new=$((new + 1));;
    *) lost=$((lost + 1)); echo "powercut: power lost at operation $k of $ops ($how): $res" >&2;;
  esac
done
echo "$n cut points, $((old + new)) recovered (old $old, new $new), $lost lost"
[ "$lost" -eq 0 ]
