<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\EngineException;
use SilverStripe\Core\Extension;
use SilverStripe\Forms\Form;
use SilverStripe\Forms\GridField\GridFieldDetailForm_ItemRequest;
use SilverStripe\Forms\LiteralField;
use SilverStripe\ORM\DataObject;
use SilverStripe\Security\Security;

/**
 * Presence in the CMS: the edit form of a record whose class has
 * PushesChanges shows who else has it open (their names, from their Member)
 * and a "saved by X — reload" notice when someone else saves it. The token
 * is issued only to members who may edit the record, for its topic alone.
 * Nothing is added when no hub is set up (hub_listen).
 *
 * @property GridFieldDetailForm_ItemRequest $owner
 */
class CmsPresence extends Extension
{
    /** Lifetime of the token an edit form carries, in seconds. */
    private static int $token_ttl = 43200;

    public function updateItemEditForm(Form $form): void
    {
        $record = $this->owner->getRecord();
        $member = Security::getCurrentUser();
        $hub = Async::hubUrl();
        if (!$record instanceof DataObject || !$record->isInDB() || !$record->hasExtension(PushesChanges::class)
            || !$member || !$record->canEdit($member) || $hub === null) {
            return;
        }
        $topic = Async::recordTopic($record->ClassName, (int) $record->ID);
        $presence = '/.well-known/mercure/subscriptions/' . rawurlencode($topic);
        $tab = bin2hex(random_bytes(8));
        try {
            $token = Async::subscriberToken(
                [$topic, $presence . '{/subscriber}'],
                (int) $this->owner->config()->get('token_ttl') ?: 43200,
                ['id' => (int) $member->ID, 'name' => $member->getName(), 'tab' => $tab]
            );
        } catch (EngineException $e) {
            error_log('async-engine: no CMS presence: ' . $e->getMessage());
            return;
        }
        $attributes = '';
        foreach (['hub' => $hub, 'token' => $token, 'topic' => $topic, 'presence' => $presence,
            'me' => (string) $member->ID, 'tab' => $tab] as $name => $value) {
            $attributes .= sprintf(' data-%s="%s"', $name, htmlspecialchars($value, ENT_QUOTES));
        }
        $script = (string) file_get_contents(dirname(__DIR__, 2) . '/client/presence.js');
        $form->Fields()->unshift(LiteralField::create('AsyncPresence', sprintf(
            '<div class="async-presence message notice"%s hidden><p class="async-presence__others"></p>'
            . '<p class="async-presence__saved"></p></div><script>%s</script>',
            $attributes,
            $script
        )));
    }
}
