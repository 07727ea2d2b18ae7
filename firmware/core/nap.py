# Waiting without holding the GIL, for the threads that are not the control loop. On the
# ESP32 every time.sleep_ms() ends in a busy-wait of up to one FreeRTOS tick (10 ms) with
# the GIL held, which the control thread would wait out; a poll on an empty poller waits in
# the RTOS with the GIL released (docs/esp32-timing.md). The control loop keeps its own
# sleep: it has to wake on time, and nothing else must be let in first.
import select


def nap(ms):
    select.poll().poll(ms)
