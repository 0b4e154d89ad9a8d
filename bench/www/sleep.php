<?php

// A page that works for 20 ms: the baseline of tasks that take as long.
usleep(20000);
echo 'slept';
