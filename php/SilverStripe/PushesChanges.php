<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\EngineException;
use SilverStripe\ORM\DataExtension;
use SilverStripe\ORM\DataObject;
use SilverStripe\Security\Security;
use SilverStripe\Versioned\Versioned;

/**
 * Pushes a record's changes: after write, delete, publish and unpublish it
 * publishes an update on the live-events hub — on silverstripe/{Class}/{ID}
 * and silverstripe/{Class} (see Async::recordTopic()) — saying what changed
 * and who changed it, and runs the record's onAfterWriteAsync(),
 * onAfterDeleteAsync(), onAfterPublishAsync() and onAfterUnpublishAsync()
 * hooks, if it has them, in a task outside the editor's request.
 *
 * Apply it to a DataObject class in YAML (extensions: -
 * AsyncEngine\SilverStripe\PushesChanges). Updates are private (for tokens
 * that name the record's topics, such as the CMS's) unless the class sets
 * `push_public: true`.
 *
 * @property DataObject $owner
 */
class PushesChanges extends DataExtension
{
    /** Whether this class's updates go to every subscriber, not only to those with a token. */
    private static bool $push_public = false;

    /** @var list<string> fields the write in progress changes */
    private array $pushChanged = [];

    public function onBeforeWrite(): void
    {
        $this->pushChanged = array_keys($this->owner->getChangedFields(true, DataObject::CHANGE_VALUE));
    }

    public function onAfterWrite(): void
    {
        if (!$this->onLiveStage()) {
            $this->push('write', $this->pushChanged);
        }
        $this->pushChanged = [];
    }

    public function onAfterDelete(): void
    {
        if (!$this->onLiveStage()) {
            $this->push('delete', []);
        }
    }

    /**
     * Whether this write or delete is a versioned record's copy on the live
     * stage: publishing writes it there and unpublishing deletes it, which
     * their own events report.
     */
    private function onLiveStage(): bool
    {
        return class_exists(Versioned::class) && $this->owner->hasExtension(Versioned::class)
            && Versioned::get_stage() === Versioned::LIVE;
    }

    public function onAfterPublish(): void
    {
        $this->push('publish', []);
    }

    public function onAfterUnpublish(): void
    {
        $this->push('unpublish', []);
    }

    /** Publishes the event and defers the record's async hook, if it has one. */
    private function push(string $event, array $changed): void
    {
        $record = $this->owner;
        if (!$record->ID) {
            return;
        }
        $member = Security::getCurrentUser();
        $data = [
            'event' => $event,
            'class' => $record->ClassName,
            'id' => (int) $record->ID,
            'changed' => $changed,
            'by' => $member ? ['id' => (int) $member->ID, 'name' => $member->getName()] : null,
            'at' => microtime(true),
        ];
        $hook = PushHooksTask::hookFor($event);
        try {
            Async::publish(
                [Async::recordTopic($record->ClassName, (int) $record->ID), Async::classTopic($record->ClassName)],
                (string) json_encode($data),
                ['private' => !$record->config()->get('push_public'), 'type' => $event]
            );
            if ($record->hasMethod($hook)) {
                Async::defer(PushHooksTask::class, [
                    'class' => $record->ClassName,
                    'id' => (int) $record->ID,
                    'event' => $event,
                    'changed' => $changed,
                    // A deleted record is rebuilt from these for its hook.
                    'record' => $event === 'delete' ? $record->toMap() : null,
                ]);
            }
        } catch (EngineException $e) {
            // The change itself is saved: a hub or queue problem must not undo it.
            error_log(sprintf('async-engine: could not push %s of %s #%d: %s', $event, $record->ClassName, $record->ID, $e->getMessage()));
        }
    }
}
