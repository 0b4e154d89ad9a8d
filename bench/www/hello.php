<?php

// The physical limit for one request per task: the cheapest PHP request.
echo 'hello';
