<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use SilverStripe\ORM\DataObject;

/**
 * Runs a record's async hook (onAfterWriteAsync() and the like) for a change
 * PushesChanges saw, in a task request of its own. The hook gets the names
 * of the fields the write changed.
 */
class PushHooksTask implements AsyncTask
{
    /** The hook method run after `$event` (write, delete, publish, unpublish). */
    public static function hookFor(string $event): string
    {
        return 'onAfter' . ucfirst($event) . 'Async';
    }

    public function process(array $args): void
    {
        $class = (string) ($args['class'] ?? '');
        if (!is_a($class, DataObject::class, true)) {
            throw new \InvalidArgumentException("PushHooksTask: \"$class\" is not a DataObject class");
        }
        $record = $args['event'] === 'delete'
            ? $class::create((array) $args['record'], DataObject::CREATE_HYDRATED)
            : DataObject::get_by_id($class, (int) $args['id']);
        if (!$record) {
            return; // deleted since: nothing left to run the hook on
        }
        $hook = self::hookFor((string) $args['event']);
        if ($record->hasMethod($hook)) {
            $record->$hook((array) ($args['changed'] ?? []));
        }
    }
}
